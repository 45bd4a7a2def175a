"""(a) flat-out throughput and (b) paced latency through worker processes vs ``stream_chain.py``.

Ours: ``producer_agent`` served by one worker process, ``relay_b_agent`` and ``relay_c_agent``
by one each, and the caller (``python -m bench.client chain``) as the final consumer:

* 1 hop:  producer worker --stream--> caller                      (``--streams 1``)
* 3 hops: producer --> relay B --> relay C --> caller, 4 processes (``--streams 3``)

Each token carries the monotonic-ns time it was made; the caller records the latency of every
token and tok/s = N / (last token received - first token made), the baselines' definition.
The producer is in ``sleep0`` mode for (a): every token gets its own event-loop turn, as tokens
arriving from an LLM's network stream would.
"""

from __future__ import annotations

from typing import Any

from bench.common import Workers, cpu_seconds, run_baseline, run_client
from bench.harness import Context, Row, interleaved, summary

QUEUEING_P50_MS = 5.0  # a raw paced chain slower than this is queueing, not measuring transport latency

CHAIN_AGENTS = {
    "PRODUCER_AGENT": "bench.apps.chain:producer_agent",
    "RELAY_B_AGENT": "bench.apps.chain:relay_b_agent",
    "RELAY_C_AGENT": "bench.apps.chain:relay_c_agent",
}


def _only(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if len(results) != 1:
        raise RuntimeError(f"expected one RESULT line, got {sorted(results)}")
    return next(iter(results.values()))


def _with_cpu(ctx: Context, pids: dict[str, int], n: int, run: Any) -> dict[str, Any]:
    """Run once; add the CPU microseconds per token each process (and the server) spent meanwhile."""
    pids = {**pids, "redis": ctx.server.pid or 0}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out = dict(run())
    for name, pid in pids.items():
        out[f"cpu_{name}"] = (cpu_seconds(pid) - before[name]) / n * 1e6
    return out


def _baseline(ctx: Context, *args: str, n: int) -> Any:
    argv = [*args, "--runs", "1", "--n", str(n)]
    return lambda: _with_cpu(ctx, {}, n, lambda: _only(run_baseline("stream_chain.py", argv, url=ctx.url, n=n)))


def _ours(ctx: Context, workers: Workers, hops: int, mode: str, n: int, rate: float = 0) -> Any:
    args = ["chain", "--hops", str(hops), "--mode", mode, "--n", str(n), "--rate", str(rate)]
    pids = {w.name.removeprefix("bench.").removesuffix("_agent"): w.pid for w in workers.procs}
    return lambda: _with_cpu(ctx, pids, n, lambda: _only(run_client(args, url=ctx.url)))


def start_chain_workers(ctx: Context) -> Workers:
    workers = Workers(ctx.url)
    for alias, target in CHAIN_AGENTS.items():
        workers.start(target, f"bench.{alias.lower()}")
    workers.wait_served(list(CHAIN_AGENTS))
    return workers


def run_throughput(ctx: Context) -> None:
    s = ctx.settings
    n = s.n
    with start_chain_workers(ctx) as workers:
        variants = {
            "raw1": _baseline(ctx, "--streams", "1", n=n),
            "raw1_b32": _baseline(ctx, "--streams", "1", "--batch", "32", "--flush-ms", "1", n=n),
            "raw3": _baseline(ctx, "--streams", "3", n=n),
            "raw3_b32": _baseline(ctx, "--streams", "3", "--batch", "32", "--flush-ms", "1", n=n),
            "ours1": _ours(ctx, workers, 1, "sleep0", n),
            "ours3": _ours(ctx, workers, 3, "sleep0", n),
        }
        if not s.quick:
            variants["ours3_burst"] = _ours(ctx, workers, 3, "burst", n)
        res = interleaved(s.runs, variants)
    ours3 = summary(res["ours3"], "tok_s")
    ctx.add(Row("a.3hop.vs_batch32", "a", "3 hops via workers, flat out (sleep0)", " tok/s", ours3,
                summary(res["raw3_b32"], "tok_s"), "raw 3 hops, batch 32", target_ratio=1.0))
    ctx.add(Row("a.3hop.vs_per_token", "a", "3 hops via workers, flat out (sleep0)", " tok/s", ours3,
                summary(res["raw3"], "tok_s"), "raw 3 hops, XADD per token", target_ratio=3.0))
    ours1 = summary(res["ours1"], "tok_s")
    ctx.add(Row("a.1hop.vs_batch32", "a", "1 hop via a worker, flat out (sleep0)", " tok/s", ours1,
                summary(res["raw1_b32"], "tok_s"), "raw 1 hop, batch 32"))
    ctx.add(Row("a.1hop.vs_per_token", "a", "1 hop via a worker, flat out (sleep0)", " tok/s", ours1,
                summary(res["raw1"], "tok_s"), "raw 1 hop, XADD per token"))
    if "ours3_burst" in res:
        ctx.add(Row("a.3hop_burst.vs_batch32", "a", "3 hops via workers, producer in burst mode", " tok/s",
                    summary(res["ours3_burst"], "tok_s"), summary(res["raw3_b32"], "tok_s"),
                    "raw 3 hops, batch 32"))
    ctx.note("a", "including the call itself (inbox entry, pick-up by the worker, reply set-up), ours gives "
                  f"{summary(res['ours3'], 'call_tok_s').fmt(' tok/s')} for 3 hops; first token after "
                  f"{summary(res['ours3'], 'first_token_ms').fmt(' ms')} (1 hop: "
                  f"{summary(res['ours1'], 'first_token_ms').fmt(' ms')}).")
    cpu = ", ".join(f"{name} {summary(res['ours3'], f'cpu_{name}').fmt()}" for name in
                    ("producer", "relay_b", "relay_c", "redis"))
    ctx.note("a", f"CPU microseconds per token, 3 hops (sleep0): {cpu}, caller "
                  f"{summary(res['ours3'], 'caller_cpu_us_per_token').fmt()}. Redis server CPU per token: ours "
                  f"{summary(res['ours3'], 'cpu_redis').fmt(' us')} vs raw per-token "
                  f"{summary(res['raw3'], 'cpu_redis').fmt(' us')} and raw batch 32 "
                  f"{summary(res['raw3_b32'], 'cpu_redis').fmt(' us')}.")


def run_latency(ctx: Context) -> None:
    s = ctx.settings
    n, rate = s.paced_n, s.rate
    rate_args = ["--rate", f"{rate:g}"]
    with start_chain_workers(ctx) as workers:
        variants = {
            "raw3": _baseline(ctx, "--streams", "3", *rate_args, n=n),
            "ours3": _ours(ctx, workers, 3, "paced", n, rate),
            "raw1": _baseline(ctx, "--streams", "1", *rate_args, n=n),
            "ours1": _ours(ctx, workers, 1, "paced", n, rate),
        }
        res = interleaved(s.runs, variants)
    for hops, targets in ((3, {"p50": 1.3, "p99": 1.5}), (1, {})):
        raw_p50 = summary(res[f"raw{hops}"], "p50_ms")
        # Unloaded, the raw chain's p50 is 0.23 ms (1 hop) / 0.70 ms (3 hops) (baseline RESULTS.md). Far
        # above that it is queueing: the machine could not keep up with the pace, so no latency to compare.
        void = ""
        if raw_p50.median > QUEUEING_P50_MS:
            void = (f"the raw chain itself queued (p50 {raw_p50.fmt(' ms')}; unloaded about 0.2-0.7 ms): "
                    "the machine could not sustain the pace, so this is not a latency comparison")
            ctx.note("b", f"{hops} hop(s): {void}.")
        for pct in ("p50", "p99"):
            ctx.add(Row(f"b.{hops}hop.{pct}", "b", f"{hops} hop{'s' if hops > 1 else ''} via workers, "
                        f"paced {rate:g} tok/s, latency {pct}", " ms",
                        summary(res[f"ours{hops}"], f"{pct}_ms"), summary(res[f"raw{hops}"], f"{pct}_ms"),
                        f"raw {hops} hop{'s' if hops > 1 else ''}, XADD per token", higher_is_better=False,
                        target_ratio=targets.get(pct), void=void))
    ctx.note("b", f"max latency, 3 hops: ours {summary(res['ours3'], 'max_ms').fmt(' ms')}, raw "
                  f"{summary(res['raw3'], 'max_ms').fmt(' ms')}.")
