"""Leakage against defence strength: the defended cases of one undefended configuration whose defence chains
differ in one token's value (``-def_dpsgd0``, ``-def_dpsgd0.001``, ``-def_dpsgd0.01``), with the plot of the
most leaking image's SSIM and of the update's utility against that value.

A family is keyed by (profile, undefended id, the chain's token names, the index of the token that varies, the
values of the others): ``clip1`` alone (no noise) is not in the ``clip1+noise`` family, and ``clip1+noise0.1`` and
``clip2+noise0.1`` are two points of a ``clip+noise0.1`` family. It needs at least two strengths. The undefended
case, when the results hold it, is the plot's dashed reference.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from giacheck.report.rows import NON_FINITE, CaseRow, shown_score
from giacheck.specs import DEFENCE_TOKEN

__all__ = ["COLUMNS", "Curve", "CurvePoint", "curves", "shown_epsilon", "table_cells", "x_scale"]

log = logging.getLogger("giacheck.report")

COLUMNS = ("strength", "ε", "worst SSIM", "re-identified", "cosine", "relative descent")  # of table_cells
_MAX_STEM = 180  # a curve's file name stays well below the 255 bytes of a file name
# (profile, undefended id, token names, index of the varying token, the other tokens' values)
_Family = tuple[str, str, tuple[str, ...], int, tuple[float | None, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class CurvePoint:
    """One defended case of a family: the varying token's value and the ε the defence accounts for (None: none)."""

    strength: float
    row: CaseRow
    epsilon: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """A family of defended cases by strength, its undefended case (None: not in the results), the rendered plot."""

    profile: str
    base: str  # the undefended case id
    defence: str  # the chain with the varying token's value left out: "dpsgd", "clip1+noise"
    points: tuple[CurvePoint, ...]  # by strength
    undefended: CaseRow | None
    name: str  # unique among the report's curves (the output's key is "curve:<name>")
    filename: str
    png: bytes | None  # None when matplotlib is missing

    @property
    def rows(self) -> tuple[CaseRow, ...]:
        return tuple(point.row for point in self.points)

    @property
    def title(self) -> str:
        return f"{self.base}: {self.defence}"


def _token(token: str) -> tuple[str, float | None]:
    """``giacheck.defences.parse_token`` (the same grammar, :data:`giacheck.specs.DEFENCE_TOKEN`), without
    importing the defences (and torch) into the report."""
    m = DEFENCE_TOKEN.match(token)
    if m is None:  # the case grammar read the id, so its tokens are well formed; shown, never grouped
        return token, None
    return m["name"], float(m["value"]) if m["value"] is not None else None


def curves(rows: Sequence[CaseRow]) -> list[Curve]:
    """Group the defended cases into families (see the module docstring) and plot each."""
    by_case: dict[tuple[str, str], CaseRow] = {}
    for row in rows:
        by_case[(row.profile, row.case_id)] = row  # the same case under two suites: one point
    families: dict[_Family, list[tuple[float, CaseRow]]] = {}
    for row in by_case.values():
        base = row.undefended_id
        if base is None:
            continue
        parsed = [_token(token) for token in row.defences]
        names, values = tuple(n for n, _ in parsed), tuple(v for _, v in parsed)
        for i, value in enumerate(values):
            if value is not None:
                families.setdefault((row.profile, base, names, i, values[:i] + values[i + 1:]), []).append((value, row))
    kept = sorted(((key, sorted(members, key=lambda m: m[0])) for key, members in families.items()
                   if len({strength for strength, _ in members}) >= 2),
                  key=lambda item: (*item[0][:4], tuple(-1.0 if v is None else v for v in item[0][4])))
    profiles = {key[0] for key, _ in kept}
    found: list[Curve] = []
    taken: set[str] = set()
    for (profile, base, names, index, _), members in kept:
        tokens = members[0][1].defences
        defence = "+".join(names[index] if j == index else token for j, token in enumerate(tokens))
        name = _unique(f"{base}-def_{defence}" + (f"-{profile}" if len(profiles) > 1 else ""), taken)
        points = tuple(CurvePoint(strength=strength, row=row, epsilon=_epsilon(row, row.defences[index]))
                       for strength, row in members)
        curve = Curve(profile=profile, base=base, defence=defence, points=points,
                      undefended=by_case.get((profile, base)), name=name, filename=f"curve-{name}.png", png=None)
        found.append(replace(curve, png=_curve_png(curve)))
    return found


def _unique(label: str, taken: set[str]) -> str:
    """A file-name stem for ``label``: characters outside ``[A-Za-z0-9_.-]`` as ``_``, a long one shortened with
    a digest of it, and a number appended when another curve has it already."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    if len(stem) > _MAX_STEM:
        stem = f"{stem[:_MAX_STEM - 13]}-{hashlib.sha256(label.encode()).hexdigest()[:12]}"
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    return name


def _epsilon(row: CaseRow, token: str) -> float | None:
    """The ε of the varying defence (``threat.privacy`` names it), else of the chain's only accounted defence."""
    epsilons = row.epsilons
    mine = [epsilon for defence, epsilon in epsilons if defence == token]
    if mine:
        return mine[0]
    return epsilons[0][1] if len(epsilons) == 1 else None


def shown_epsilon(epsilon: float | None) -> str:
    """``0.84``, ``812``, ``50,000``, ``3.2e+07``, ``∞`` (no noise), ``—`` (no accounted defence)."""
    if epsilon is None:
        return "—"
    if math.isnan(epsilon):
        return NON_FINITE
    if math.isinf(epsilon):
        return "∞"
    return f"{epsilon:.3g}" if epsilon < 1e3 else f"{epsilon:,.0f}" if epsilon < 1e6 else f"{epsilon:.2g}"


def _shown_reid(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def table_cells(curve: Curve) -> list[tuple[str, ...]]:
    """The rows of a curve's table (:data:`COLUMNS`): the undefended case first, when present, then by strength."""
    cells = []
    if curve.undefended is not None:
        cells.append(("undefended", "—", shown_score(curve.undefended.worst_ssim),
                      _shown_reid(curve.undefended.reidentified), shown_score(1.0), shown_score(1.0)))
    cells.extend((f"{p.strength:g}", shown_epsilon(p.epsilon), shown_score(p.row.worst_ssim),
                  _shown_reid(p.row.reidentified), shown_score(p.row.utility("cosine")),
                  shown_score(p.row.utility("relative_descent"))) for p in curve.points)
    return cells


def x_scale(strengths: Sequence[float]) -> tuple[str, dict[str, float]]:
    """The strength axis: ``symlog`` when 0 is among the strengths (linear up to the smallest other one), ``log``
    when all are positive and span two decades or more, else ``linear``; with the scale's keyword arguments."""
    positive = [s for s in strengths if s > 0]
    if positive and len(positive) < len(strengths):
        return "symlog", {"linthresh": min(positive)}
    if positive and max(positive) / min(positive) >= 100:
        return "log", {}
    return "linear", {}


def _finite(points: Sequence[tuple[float, float | None]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if y is not None and math.isfinite(y)]


def _curve_png(curve: Curve) -> bytes | None:
    """Left: the most leaking image's SSIM against strength (filled: re-identified), ε beside each point, the
    undefended case dashed; right: the update's cosine to the undefended one and its relative held-out descent."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        log.warning("matplotlib is not installed: the defence curves are shown as tables only")
        return None
    figure = Figure(figsize=(10.0, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    leak, use = figure.subplots(1, 2)
    scale, scale_args = x_scale([p.strength for p in curve.points])
    label = f"strength of {curve.defence.replace('+', ' + ')}"
    for axes in (leak, use):
        axes.set_xscale(scale, **scale_args)
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)

    points = [(p.strength, p.row.worst_ssim, p) for p in curve.points if math.isfinite(p.row.worst_ssim)]
    colour = "C0"
    if points:
        leak.plot([x for x, _, _ in points], [y for _, y, _ in points], color=colour)
    for x, y, point in points:
        leak.plot([x], [y], marker="o", linestyle="none", color=colour,
                  markerfacecolor=colour if point.row.reidentified else "none")
        if point.epsilon is not None:
            leak.annotate(f"ε={shown_epsilon(point.epsilon)}", (x, y), textcoords="offset points", xytext=(4, 5),
                          fontsize=7)
    handles = [Line2D([], [], marker="o", linestyle="none", color=colour, label="re-identified"),
               Line2D([], [], marker="o", linestyle="none", color=colour, markerfacecolor="none",
                      label="not re-identified")]
    lowest = min([0.0, *(y for _, y, _ in points)])
    if curve.undefended is not None and math.isfinite(curve.undefended.worst_ssim):
        handles.append(leak.axhline(curve.undefended.worst_ssim, linestyle="--", color="0.4", label="undefended"))
        lowest = min(lowest, curve.undefended.worst_ssim)
    leak.set(ylim=(lowest - 0.02, 1.02), ylabel="SSIM (most leaking image)", title="leakage")
    leak.legend(handles=handles, fontsize=7, loc="best")

    cosine = _finite([(p.strength, p.row.utility("cosine")) for p in curve.points])
    descent = _finite([(p.strength, p.row.utility("relative_descent")) for p in curve.points])
    use.set(title="utility")
    if not (cosine or descent):
        use.text(0.5, 0.5, "no utility recorded", ha="center", va="center", transform=use.transAxes, color="0.4")
        use.set_yticks([])
    else:
        if cosine:
            use.plot(*zip(*cosine, strict=True), marker="s", color="C1", label="cosine to undefended")
        if descent:
            use.plot(*zip(*descent, strict=True), marker="^", color="C2", label="relative descent")
        use.axhline(1.0, linestyle="--", color="0.4", label="undefended")
        use.axhline(0.0, linestyle=":", color="0.6", linewidth=0.8)
        use.set_ylabel("relative to the undefended update")
        use.legend(fontsize=7, loc="best")
    figure.suptitle(curve.title, fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
