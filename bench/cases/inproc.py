"""(c) In-process 3-agent chain vs MiniAgents 0.0.35 (``b7_miniagents_chain.py``).

producer -> relay -> relay -> consumer in one process, the same agents and the same work with
our API (``bench.apps.chain``). Ours runs twice: in memory (no Redis) and connected to Redis
(every message promise mirrored to its stream). One round = one baseline run + one of each of
ours, interleaved. Issue 2's target: ours >= 1.0x MiniAgents.
"""

from __future__ import annotations

from bench.common import run_baseline, run_client
from bench.harness import Context, Row, interleaved, summary

BASELINE = "MiniAgents 0.0.35"


def run(ctx: Context) -> None:
    s = ctx.settings
    # Connected runs are much slower per token; a smaller N keeps the full run short (tok/s is
    # a rate, so N only changes how long a run takes, not what it measures).
    n_redis = s.n if s.quick else max(1000, s.n // 4)

    def baseline() -> dict[str, float]:
        args = ["--runs", "1", "--n", str(s.n), "--paced-n", str(s.paced_n), "--rate", str(s.rate)]
        return run_baseline("b7_miniagents_chain.py", args, url=ctx.url, n=s.n)["miniagents_chain3"]

    def ours_memory() -> dict[str, float]:
        res = run_client(["inproc", "--modes", "burst,sleep0,paced", "--n", str(s.n),
                          "--paced-n", str(s.paced_n), "--rate", str(s.rate)])
        return {f"{mode}_{k}": v for mode in ("burst", "sleep0", "paced")
                for k, v in res[f"inproc_{mode}_memory"].items()}

    def ours_redis() -> dict[str, float]:
        ctx.server.flush()
        res = run_client(["inproc", "--modes", "burst,sleep0", "--n", str(n_redis)], url=ctx.url)
        return {f"{mode}_{k}": v for mode in ("burst", "sleep0") for k, v in res[f"inproc_{mode}_redis"].items()}

    results = interleaved(s.runs, {"baseline": baseline, "memory": ours_memory, "redis": ours_redis})
    base, mem, red = results["baseline"], results["memory"], results["redis"]
    for mode, label in (("burst", "burst (generator never awaits)"), ("sleep0", "sleep0 (a loop turn per token)")):
        ctx.add(Row(f"c.{mode}.memory", "c", f"in-process chain, {label}, in memory", " tok/s",
                    summary(mem, f"{mode}_tok_s"), summary(base, f"{mode}_tok_s"), BASELINE,
                    target_ratio=1.0))
        ctx.add(Row(f"c.{mode}.redis", "c", f"in-process chain, {label}, connected (mirrored to Redis)",
                    " tok/s", summary(red, f"{mode}_tok_s"), summary(base, f"{mode}_tok_s"), BASELINE,
                    target_ratio=1.0, note=f"N={n_redis}"))
    for pct in ("p50", "p99"):
        ctx.add(Row(f"c.paced.{pct}", "c", f"in-process chain, paced {s.rate:g} tok/s, latency {pct}, in memory",
                    " ms", summary(mem, f"paced_{pct}_ms"), summary(base, f"paced_{pct}_ms"), BASELINE,
                    higher_is_better=False))
    exit_ms = summary(red, "sleep0_exit_ms")
    ctx.note("c", f"connected runs use N={n_redis}; the context exit (final flush to Redis) after the last "
                  f"token took {exit_ms.fmt(' ms')} more in sleep0 mode (not counted in tok/s, as in b7).")
    ctx.plots["c"] = {"rows": [r for r in ctx.rows if r.case == "c" and r.unit == " tok/s"]}
