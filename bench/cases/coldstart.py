"""(f) Cold start: from spawning ``python -m brokeragents worker`` to the worker being registered.

"Registered" is the moment its first heartbeat is in the registry (``ba:agent:{ALIAS}:workers``
holds its name), i.e. callers see it served and it is reading its inbox. Polled every 2 ms.
For scale, the same run measures the floor a Python worker cannot beat: the interpreter alone
(``python -c pass``) and the import of the worker's code (``import brokeragents.cli``).
Target: <= 0.5 s.
"""

from __future__ import annotations

import subprocess
import time

import redis

from bench.common import PYTHON, REPO_ROOT, Workers
from bench.harness import Context, Row, interleaved, summary
from brokeragents.keys import Keys

ALIAS = "PRODUCER_AGENT"
TARGET_S = 0.5


def _wall_s(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, cwd=str(REPO_ROOT), check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


IMPORT_PROBE = "import brokeragents.cli, brokeragents.worker"
BIG_IMPORTS = ("brokeragents.cli", "redis", "pydantic", "opentelemetry.sdk.metrics", "click")


def import_breakdown() -> str:
    """Cumulative import time of the heaviest packages (``python -X importtime``), one run."""
    proc = subprocess.run([PYTHON, "-X", "importtime", "-c", IMPORT_PROBE], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, check=True)
    found: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() in BIG_IMPORTS and parts[2].strip() not in found:
            found[parts[2].strip()] = int(parts[1].strip())
    return ", ".join(f"{name} {found[name] / 1000:.0f} ms" for name in BIG_IMPORTS if name in found)


def run(ctx: Context) -> None:
    keys = Keys()
    client = redis.Redis.from_url(ctx.url)
    counter = iter(range(1_000_000))

    def worker_ready() -> dict[str, float]:
        name = f"bench.cold.{next(counter)}"
        with Workers(ctx.url) as workers:
            worker = workers.start("bench.apps.chain:producer_agent", name)
            deadline = time.monotonic() + 30
            while client.zscore(keys.agent_workers(ALIAS), name) is None:
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} did not register: {worker.log_path.read_text()[-1500:]}")
                time.sleep(0.002)
            ready_ns = time.monotonic_ns()
        return {"ready_s": (ready_ns - worker.started_ns) / 1e9}

    variants = {
        "worker": worker_ready,
        "python": lambda: {"wall_s": _wall_s([PYTHON, "-c", "pass"])},
        "import": lambda: {"wall_s": _wall_s([PYTHON, "-c", IMPORT_PROBE])},
    }
    try:
        res = interleaved(ctx.settings.runs, variants)
    finally:
        client.close()
    ctx.add(Row("f.ready", "f", "worker cold start until registered", " s", summary(res["worker"], "ready_s"),
                higher_is_better=False, target_value=TARGET_S))
    ctx.note("f", f"floor on this machine: interpreter start {summary(res['python'], 'wall_s').fmt(' s')}; "
                  f"interpreter + import brokeragents.cli/worker {summary(res['import'], 'wall_s').fmt(' s')}. "
                  f"Cumulative import times (python -X importtime, one run): {import_breakdown()}.")
