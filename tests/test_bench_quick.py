"""The benchmark harness end to end in quick mode (issue 7): it runs and writes its outputs.

Timings are never asserted: CI machines are too noisy. Only that every quick case ran, printed
its ratio lines, and that ``latest.md`` and the plots were written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASELINES = Path(os.environ.get("BENCH_BASELINE_DIR") or REPO.parent / "shared" / "reference" / "bench-baseline")
QUICK_CASES = "cabdfg"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_mode_runs_every_case_and_writes_the_report(tmp_path: Path) -> None:
    if not (BASELINES / "stream_chain.py").is_file():
        reason = f"the reference baselines are not at {BASELINES}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI clones the repo with shared/ beside it, so they must be there
        pytest.skip(reason)
    out_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=880,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]

    ratio_lines = re.findall(r"^RATIO id=(\S+) ours=\S+ baseline=\S+ ratio=(\S+) target=\S+ met=(\S+)$",
                             proc.stdout, flags=re.MULTILINE)
    cases = {row_id.split(".")[0] for row_id, _ratio, _met in ratio_lines}
    assert cases == set(QUICK_CASES), output[-5000:]
    # Cases with a baseline print an actual ratio (a number followed by x).
    for case in "cabd":
        assert any(row_id.startswith(case + ".") and re.fullmatch(r"[0-9.]+x", ratio)
                   for row_id, ratio, _met in ratio_lines), case
    assert all(met in ("yes", "NO", "-", "void") for _id, _ratio, met in ratio_lines)
    assert "server: " in proc.stdout and "machine: nproc=" in proc.stdout

    report = (out_dir / "latest.md").read_text()
    assert "| case | what | ours | baseline | ratio | target | met |" in report
    assert "- command: `python -m bench --quick" in report
    assert "nproc=" in report and "Python " in report
    for png in ("ratios.png", "throughput.png", "latency.png"):
        assert (out_dir / png).stat().st_size > 1000, png
        assert f"]({png})" in report
