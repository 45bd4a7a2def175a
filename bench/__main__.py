"""``python -m bench``: run the benchmark cases against the baselines; write the results.

Full mode (default): every case, N=20000 tokens flat out, 3000 paced at 1000 tok/s, 5 rounds,
10-15 minutes on an idle 2-core machine (20 on a busy one); writes ``bench/results/latest.md``,
``latest.json`` and PNG plots. ``--quick``: small N, one
round, a subset of cases (well under 2 minutes), written to ``bench/results/quick/``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

from bench.common import REPO_ROOT, BenchServer, baseline_dir, log
from bench.harness import Context, Settings, run_case

ALL_CASES = "cabdefg"
QUICK_CASES = "cabdfg"


def _cases() -> dict[str, tuple[str, object]]:
    from bench.cases import coldstart, idle, inproc, memory, scale, workers

    return {
        "c": ("in-process 3-agent chain vs MiniAgents 0.0.35", inproc.run),
        "a": ("flat out through worker processes vs stream_chain.py", workers.run_throughput),
        "b": ("paced latency through worker processes vs stream_chain.py --rate", workers.run_latency),
        "d": ("Redis memory vs b8_memory.py", memory.run),
        "e": ("scale: workers x concurrent calls", scale.run),
        "f": ("worker cold start", coldstart.run),
        "g": ("idle worker's Redis commands", idle.run),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N, one round, a subset of cases")
    parser.add_argument("--cases", help=f"which cases, e.g. 'ab' (default: {ALL_CASES}; quick: {QUICK_CASES})")
    parser.add_argument("--runs", type=int, help="rounds per case (default: 5; quick: 1)")
    parser.add_argument("--n", type=int, help="tokens of a flat-out run (default: 20000; quick: 2000)")
    parser.add_argument("--paced-n", type=int, help="tokens of a paced run (default: 3000; quick: 300)")
    parser.add_argument("--rate", type=float, default=1000.0, help="pace of the paced runs, tok/s")
    parser.add_argument("--out", type=Path,
                        help="output directory (default: bench/results; quick: bench/results/quick)")
    parser.add_argument("--no-plots", action="store_true")
    return parser.parse_args(argv)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick
    settings = Settings(
        quick=quick,
        runs=args.runs or (1 if quick else 5),
        n=args.n or (2000 if quick else 20000),
        paced_n=args.paced_n or (300 if quick else 3000),
        rate=args.rate,
    )
    selected = args.cases or (QUICK_CASES if quick else ALL_CASES)
    cases = _cases()
    unknown = set(selected) - set(cases)
    if unknown:
        raise SystemExit(f"unknown case(s): {''.join(sorted(unknown))}; choose from {ALL_CASES}")
    out_dir = args.out or (REPO_ROOT / "bench" / "results" / ("quick" if quick else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO_ROOT)  # the reference scripts and workers import relative to the repo

    from bench import report

    log(f"baselines: {baseline_dir()}")
    started = time.monotonic()
    load_start = _load()
    steal_start = report.cpu_steal_jiffies()
    server = BenchServer()
    server.start()
    log(f"server: {server.version} at {server.url} - {server.kind}")
    ctx = Context(server, settings)
    try:
        meta_machine = report.machine_info(ctx)
        log("machine: " + "; ".join(f"{k}={v}" for k, v in meta_machine.items()))
        log(f"settings: {settings}")
        for case in ALL_CASES:
            if case in selected:
                title, body = cases[case]
                server.flush()
                run_case(ctx, case, title, body)  # type: ignore[arg-type]
    finally:
        server.stop()
    meta = {
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "duration_s": time.monotonic() - started,
        "machine": meta_machine,
        "load_start": load_start,
        "load_end": _load(),
        "steal": report.cpu_steal_jiffies() - steal_start,
    }
    report.print_table(ctx)
    plots = [] if args.no_plots else report.write_plots(ctx, out_dir)
    path = report.write_markdown(ctx, out_dir, meta, plots)
    report.write_json(ctx, out_dir, meta)
    log(f"wrote {path}" + (f" and {', '.join(plots)}" if plots else "") + f" in {meta['duration_s']:.0f} s")
    return 1 if ctx.failures else 0


if __name__ == "__main__":
    sys.exit(main())
