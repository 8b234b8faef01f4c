"""What the report lays out, whatever the format: suites, the Figure 4 ladders (with their plots), captions."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from giacheck.report.rows import CaseRow, shown_score

__all__ = ["Ladder", "caption", "ladders", "num", "suite_title", "suites"]

log = logging.getLogger("giacheck.report")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ladder:
    """Figure 4 ladder of one architecture: its cases by noise fraction, and the rendered plot."""

    architecture: str
    rows: tuple[CaseRow, ...]
    filename: str
    png: bytes | None  # None when matplotlib is missing


def ladders(rows: Sequence[CaseRow]) -> list[Ladder]:
    """Group ``-init_p`` cases by architecture (the case's model) and plot each group."""
    by_case: dict[tuple[str, str], CaseRow] = {}
    for row in rows:
        if row.init_p is not None:
            by_case[(row.profile, row.case_id)] = row  # the same case under two suites: one point
    groups: dict[str, list[CaseRow]] = {}
    for row in by_case.values():
        groups.setdefault(row.architecture, []).append(row)
    found = []
    for architecture, members in sorted(groups.items()):
        members.sort(key=lambda r: (r.profile, r.series, r.init_p))
        filename = f"ladder-{re.sub(r'[^A-Za-z0-9_.-]', '_', architecture)}.png"
        found.append(Ladder(architecture=architecture, rows=tuple(members), filename=filename,
                            png=_ladder_png(architecture, members)))
    return found


def _ladder_png(architecture: str, rows: Sequence[CaseRow]) -> bytes | None:
    """SSIM after the attack (solid) and at its start (dashed) against the noise fraction p, per configuration."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: the Figure 4 ladder is shown as a table only")
        return None
    figure = Figure(figsize=(5.6, 3.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    profiles = {row.profile for row in rows}
    series: dict[str, list[CaseRow]] = {}
    for row in rows:
        label = row.series + (f" [{row.profile}]" if len(profiles) > 1 else "")
        series.setdefault(label, []).append(row)
    for label, points in series.items():
        (line,) = axes.plot([r.init_p for r in points], [r.ssim_mean for r in points], marker="o", label=label)
        start = [(r.init_p, r.init_ssim) for r in points if r.init_ssim is not None]
        if start:
            axes.plot(*zip(*start, strict=True), marker="x", linestyle="--", color=line.get_color(),
                      label=f"{label}: start")
    axes.set(xlim=(-0.02, 1.02), ylim=(0.0, 1.02), xlabel="noise fraction p of the controlled start",
             ylabel="SSIM (mean)", title=f"Figure 4 ladder: {architecture}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def num(value: float | None, digits: int = 3) -> str:
    """A score in a table: ``—`` when absent, ``n/a (non-finite)`` for NaN or infinity."""
    return shown_score(value, digits)


def suites(rows: Sequence[CaseRow]) -> dict[tuple[str, str], list[CaseRow]]:
    groups: dict[tuple[str, str], list[CaseRow]] = {}
    for row in rows:
        groups.setdefault((row.profile, row.suite), []).append(row)
    return groups


def suite_title(profile: str, suite: str, profiles: set[str]) -> str:
    name = suite or "single runs (giacheck run)"
    return f"{name} [{profile}]" if len(profiles) > 1 else name


def caption(row: CaseRow) -> str:
    start = f" (start {shown_score(row.init_ssim, 2)})" if row.init_ssim is not None else ""
    return f"SSIM {shown_score(row.ssim_mean, 2)}{start}"
