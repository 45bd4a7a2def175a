"""What a case produces (rows: ours vs baseline, ratio, target) and how runs are interleaved."""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import BenchServer, Summary, fmt_num, log


@dataclass
class Row:
    """One compared figure: ours vs a baseline (or vs an absolute target)."""

    id: str  # stable, e.g. "a.3hop.vs_batch32"
    case: str  # "a".."g"
    what: str
    unit: str
    ours: Summary
    baseline: Summary | None = None
    baseline_name: str = ""
    higher_is_better: bool = True
    target_ratio: float | None = None  # ours/baseline must be >= (or <=) this
    target_value: float | None = None  # ours must be >= (or <=) this, in `unit`
    note: str = ""
    void: str = ""  # why the comparison is not meaningful in this run (the target is then not judged)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.runs or not self.ours.runs or self.baseline.median == 0:
            return None
        return self.ours.median / self.baseline.median

    @property
    def target(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        if self.target_ratio is not None:
            return f"{sign} {self.target_ratio:g}x"
        if self.target_value is not None:
            return f"{sign} {fmt_num(self.target_value)}{self.unit}"
        return ""

    @property
    def met(self) -> bool | None:
        if self.void:
            return None
        if self.target_ratio is not None:
            value, limit = self.ratio, self.target_ratio
        elif self.target_value is not None:
            value, limit = (self.ours.median if self.ours.runs else None), self.target_value
        else:
            return None
        if value is None or math.isnan(value):
            return False
        return value >= limit if self.higher_is_better else value <= limit

    @property
    def met_text(self) -> str:
        if self.void and self.target:
            return "void"
        return {True: "yes", False: "NO", None: "-"}[self.met]

    @property
    def ratio_text(self) -> str:
        ratio = self.ratio
        return "" if ratio is None else f"{ratio:.2f}x"

    def ratio_line(self) -> str:
        """The machine-readable line printed for every row (the quick test looks for them)."""
        base = self.baseline.median if self.baseline is not None else float("nan")
        return (
            f"RATIO id={self.id} ours={self.ours.median:.6g} baseline={base:.6g} "
            f"ratio={self.ratio_text or 'n/a'} target={self.target.replace(' ', '') or 'none'} met={self.met_text}"
        )


@dataclass
class Settings:
    quick: bool
    runs: int
    n: int  # tokens of a flat-out run
    paced_n: int  # tokens of a paced run
    rate: float  # pace of the paced runs, tokens/s


@dataclass
class Context:
    """What every case gets: the server, the settings, and where rows and plot data go."""

    server: BenchServer
    settings: Settings
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    plots: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        log(f"  {row.what}: ours {row.ours.fmt(row.unit)}"
            + (f" | {row.baseline_name} {row.baseline.fmt(row.unit)}" if row.baseline else "")
            + (f" | {row.ratio_text}" if row.ratio_text else "")
            + (f" | target {row.target}: {row.met_text}" if row.target else ""))
        log(row.ratio_line())
        return row

    def note(self, case: str, text: str) -> None:
        self.notes.setdefault(case, []).append(text)
        log(f"  note: {text}")


Variant = Callable[[], dict[str, Any]]


def interleaved(runs: int, variants: dict[str, Variant]) -> dict[str, list[dict[str, Any]]]:
    """Run every variant once per round, alternating the order each round (ABAB, then BABA).

    Back to back and interleaved, so drift on a noisy machine hits ours and the baseline alike.
    """
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for round_index in range(runs):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in order:
            results[name].append(variants[name]())
        log(f"  round {round_index + 1}/{runs} done")
    return results


def summary(results: list[dict[str, Any]], key: str) -> Summary:
    return Summary.of([float(r[key]) for r in results if key in r])


def run_case(ctx: Context, case: str, title: str, body: Callable[[Context], None]) -> None:
    """Run one case; a failure is recorded (and reported) instead of stopping the whole run."""
    log(f"\n== ({case}) {title}")
    try:
        body(ctx)
    except Exception as exc:
        ctx.failures[case] = f"{type(exc).__name__}: {exc}"
        log(f"  FAILED: {ctx.failures[case]}")
        log(traceback.format_exc())
