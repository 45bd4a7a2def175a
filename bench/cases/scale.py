"""(e) Scale: 1, 2 and 4 worker processes; 1, 10, 100 and 1000 concurrent calls.

The workload is LLM-like: each call streams a short reply (50 tokens paced at 500 tok/s, so
100 ms per call) from a worker with ``--concurrency 10``, and one caller process
(``python -m bench.client scale``) makes all the calls at once and reads every token. The three
worker sets serve three aliases (``bench.apps.scale``) and all run for the whole case, so the
rounds of the three sets can be interleaved. Peak RSS (VmHWM, reset before each run) is the
largest among the set's workers. A CPU-bound variant (flat-out tokens) shows what 2 cores allow
when the work is not waiting on an LLM.

1000 concurrent calls run with 1 and 2 workers only (each such run takes ~20 s).

Targets: >= 1.6x calls/s from 1 to 2 workers; 1000 concurrent calls complete with bounded worker
memory (peak RSS at 1000 calls <= 2x the peak at 10 calls, since each worker runs at most
``concurrency`` calls at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import (
    ChildFailedError,
    Summary,
    Workers,
    cpu_seconds,
    error_summary,
    peak_rss_mb,
    reset_peak_rss,
    run_client,
)
from bench.harness import Context, Row, interleaved, summary

CONCURRENCY = 10
CALL_TIMEOUT_S = 120.0  # one scale run; 1000 calls on 1 worker take ~10 s on an idle machine
CPU_CALLS, CPU_N = 10, 2000
METRICS = ("calls_s", "tok_s", "call_p50_ms", "call_p99_ms", "worker_rss_mb", "client_rss_mb",
           "caller_cpu_ms_per_call", "worker_cpu_ms_per_call", "redis_cpu_ms_per_call", "retried_errors",
           "pool_exhausted_errors")


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    levels: tuple[int, ...]
    n: int
    rate: float
    cpu: bool
    top_sizes: tuple[int, ...]  # sizes run at the top level (1000 calls take ~20 s per run)


def _variant(ctx: Context, pids: list[int], size: int, calls: int, mode: str, n: int, rate: float,
             failures: dict[Any, str]) -> Any:
    """One run; a level that failed once (e.g. 1000 calls) is skipped afterwards, for every size."""

    def one() -> dict[str, Any]:
        if (mode, calls) in failures:
            return {"error": failures[mode, calls]}
        resettable = all(reset_peak_rss(pid) for pid in pids)
        cpu0 = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(ctx.server.pid or 0)
        try:
            res = run_client(["scale", "--alias", f"SCALE_W{size}_AGENT", "--calls", str(calls), "--n", str(n),
                              "--mode", mode, "--rate", f"{rate:g}"], url=ctx.url, timeout_s=CALL_TIMEOUT_S)
        except ChildFailedError as exc:
            failures[mode, calls] = f"{size} worker(s), {calls} calls: {error_summary(exc)}"
            return {"error": failures[mode, calls], "worker_rss_mb": max(peak_rss_mb(pid) for pid in pids)}
        out = dict(next(iter(res.values())))
        out["worker_cpu_ms_per_call"] = (sum(cpu_seconds(pid) for pid in pids) - cpu0[0]) / calls * 1000
        out["redis_cpu_ms_per_call"] = (cpu_seconds(ctx.server.pid or 0) - cpu0[1]) / calls * 1000
        out["worker_rss_mb"] = max(peak_rss_mb(pid) for pid in pids)
        out["rss_reset"] = float(resettable)
        return out

    return one


def _measure(ctx: Context, plan: Plan, failures: dict[Any, str]) -> dict[str, list[dict[str, Any]]]:
    with Workers(ctx.url) as workers:
        pids: dict[int, list[int]] = {}
        for size in plan.sizes:
            pids[size] = [workers.start(f"bench.apps.scale:scale_w{size}_agent", f"bench.scale.w{size}.{i + 1}",
                                        concurrency=CONCURRENCY).pid for i in range(size)]
        for size in plan.sizes:
            workers.wait_served([f"SCALE_W{size}_AGENT"], min_workers=size)
        variants = {f"w{size}_c{calls}": _variant(ctx, pids[size], size, calls, "paced", plan.n, plan.rate, failures)
                    for calls in plan.levels for size in plan.sizes
                    if calls != plan.levels[-1] or size in plan.top_sizes}
        if plan.cpu:
            variants.update({f"cpu_w{size}": _variant(ctx, pids[size], size, CPU_CALLS, "sleep0", CPU_N, 0, failures)
                             for size in (1, 2)})
        return interleaved(ctx.settings.runs, variants)


def run(ctx: Context) -> None:
    if ctx.settings.quick:
        plan = Plan(sizes=(1, 2), levels=(1, 10, 100), n=20, rate=500.0, cpu=False, top_sizes=(1, 2))
    else:
        plan = Plan(sizes=(1, 2, 4), levels=(1, 10, 100, 1000), n=50, rate=500.0, cpu=True, top_sizes=(1, 2))
    failures: dict[Any, str] = {}
    res = _measure(ctx, plan, failures)
    for reason in failures.values():
        ctx.note("e", f"FAILED (did not complete within {CALL_TIMEOUT_S:g} s; the level was not retried): {reason}")
    matrix: dict[tuple[int, int], dict[str, Summary]] = {
        (size, calls): {k: summary(res.get(f"w{size}_c{calls}", []), k) for k in METRICS}
        for calls in plan.levels for size in plan.sizes
    }
    top = plan.levels[-1]
    for calls in sorted({100, top} & set(plan.levels)):
        ctx.add(Row(f"e.w2_vs_w1.c{calls}", "e", f"{calls} concurrent calls, 2 workers vs 1", " calls/s",
                    matrix[2, calls]["calls_s"], matrix[1, calls]["calls_s"], "1 worker", target_ratio=1.6))
        if 4 in plan.sizes and (calls != top or 4 in plan.top_sizes):
            ctx.add(Row(f"e.w4_vs_w1.c{calls}", "e", f"{calls} concurrent calls, 4 workers vs 1", " calls/s",
                        matrix[4, calls]["calls_s"], matrix[1, calls]["calls_s"], "1 worker"))
    top_failed = ("paced", top) in failures
    for size in plan.top_sizes:
        # Bounded memory only counts if the calls completed.
        rss = Summary.of([]) if top_failed else matrix[size, top]["worker_rss_mb"]
        ctx.add(Row(f"e.rss.w{size}", "e", f"worker peak RSS, {top} vs 10 concurrent calls, {size} worker(s)",
                    " MiB", rss, matrix[size, 10]["worker_rss_mb"], "10 calls", higher_is_better=False,
                    target_ratio=2.0, note="did not complete" if top_failed else ""))
    if plan.cpu:
        ctx.add(Row("e.cpu.w2_vs_w1", "e", f"CPU-bound: {CPU_CALLS} calls x {CPU_N} tokens flat out, 2 workers vs 1",
                    " tok/s", summary(res["cpu_w2"], "tok_s"), summary(res["cpu_w1"], "tok_s"), "1 worker"))
    if not all(r.get("rss_reset") for runs in res.values() for r in runs):
        ctx.note("e", "VmHWM could not be reset: worker peak RSS is the peak since the worker started.")
    ctx.note("e", f"workload: each call streams {plan.n} tokens at {plan.rate:g} tok/s "
                  f"({1000 * plan.n / plan.rate:g} ms) from a worker with --concurrency {CONCURRENCY}; "
                  "one caller process makes all the calls at once.")
    retried = {key: m for key, m in matrix.items() if m["retried_errors"].high > 0}
    if retried:
        ctx.note("e", "the caller logged failed Redis reads/writes, which the framework retried (median, of "
                      "which 'Too many connections', i.e. redis-py's pool at its max_connections=100 while "
                      "every tailed stream holds a connection in XREAD BLOCK): "
                      + "; ".join(f"{size} worker(s) x {calls} calls: {m['retried_errors'].fmt()} "
                                  f"({m['pool_exhausted_errors'].fmt()})"
                                  for (size, calls), m in sorted(retried.items())) + ".")
    if (1, 100) in matrix:
        m = matrix[1, 100]
        ctx.note("e", f"CPU per call at 100 calls, 1 worker: caller {m['caller_cpu_ms_per_call'].fmt(' ms')}, "
                      f"worker {m['worker_cpu_ms_per_call'].fmt(' ms')}, Redis {m['redis_cpu_ms_per_call'].fmt(' ms')} "
                      f"({plan.n} tokens per call).")
    ctx.plots["e"] = {"sizes": plan.sizes, "levels": plan.levels, "matrix": matrix}
