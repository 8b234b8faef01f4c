"""``report.md``: the verdict table, the ladders and the defence curves' tables, with links to the PNGs (images are
embedded only in HTML)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from giacheck.report.curves import COLUMNS as CURVE_COLUMNS
from giacheck.report.curves import Curve, table_cells
from giacheck.report.layout import Ladder, caption, num, suite_title, suites
from giacheck.report.rows import EVIDENCE_COLUMNS, EVIDENCE_NOTE, CaseRow

__all__ = ["render_markdown"]


# Markdown punctuation that could start markup (code, emphasis, links, images, strikethrough, a table column);
# ``_`` only where it could open or close emphasis (not inside a word: ``test_table1`` stays as it is)
_MARKUP = re.compile(r"[\\`*\[\]|~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _cell(text: str) -> str:
    """``text`` as plain text of a Markdown table cell or heading: one line, markup and raw HTML escaped."""
    flat = re.sub(r"[&<>]", lambda m: _HTML[m[0]], " ".join(text.split()))
    return _MARKUP.sub(lambda m: "\\" + m[0], flat)


def _code(text: str) -> str:
    """``text`` as an inline code span of one line: fenced by more backticks than it holds, pipes escaped (a table
    splits cells before it reads code spans)."""
    flat = " ".join(text.split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _relative(path: Path, start: Path) -> str:
    """The link to ``path`` from the folder ``start``, percent-encoded (spaces, ``<``, ``>`` and ``:`` cannot break
    out of the link or read as a scheme)."""
    try:
        relative = Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        relative = path.resolve().as_posix()
    return quote(relative, safe="/")


def render_markdown(rows: Sequence[CaseRow], images: dict[tuple[str, str, str], bytes | None],
                    ladders: Sequence[Ladder], out: Path, generated: str, summary: Sequence[str] = (), *,
                    curves: Sequence[Curve] = ()) -> str:
    """The Markdown report; PNG links are relative to ``out``, the folder it is written into."""
    profiles = {row.profile for row in rows}
    lines = [
        "# giacheck report: gradient-inversion leakage", "",
        f"{len(rows)} cases · profile {_cell(', '.join(sorted(profiles)))} · generated {generated}. "
        "Images are embedded in `report.html`.", "", *[f"**{_cell(line)}**  " for line in summary],
        *([""] if summary else []),
        "## Verdicts", "",
        "| suite | case id | claim | " + " | ".join(EVIDENCE_COLUMNS) + " | baseline | verdict |",
        "|---|---|---|" + "---|" * len(EVIDENCE_COLUMNS) + "---|---|",
    ]
    lines.extend(
        f"| {_cell(suite_title(r.profile, r.suite, profiles))} | {_code(r.case_id)}"
        f" | {_cell(r.claim or '—')} | " + " | ".join(_cell(c) for c in r.evidence_cells())
        + f" | {_cell(r.shown_baseline)} | {_cell(r.shown_verdict)} |" for r in rows)
    lines += ["", EVIDENCE_NOTE, ""]
    lines += _ladder_lines(ladders)
    lines += _curve_lines(curves)
    lines += ["## Images (originals above reconstructions)", ""]
    for (profile, suite), members in suites(rows).items():
        lines += [f"### {_cell(suite_title(profile, suite, profiles))}", ""]
        for r in members:
            where = f"[PNG](<{_relative(r.image, out)}>)" if images[r.key] is not None and r.image else "no image"
            client = f"; {_cell(r.captured_client)}" if r.captured_client else ""
            lines.append(f"- {_code(r.case_id)}: {_cell(caption(r))}, {where}{client}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _ladder_lines(ladders: Sequence[Ladder]) -> list[str]:
    if not ladders:
        return []
    lines = ["## Figure 4 ladder: SSIM against the noise of a controlled start", ""]
    for ladder in ladders:
        lines += [f"### {_cell(ladder.architecture)}", ""]
        if ladder.png is not None:
            lines += [f"![SSIM vs noise, {_cell(ladder.architecture)}]({ladder.filename})", ""]
        lines += ["| case id | p | start SSIM | SSIM |", "|---|---:|---:|---:|"]
        lines += [f"| {_code(r.case_id)} | {r.init_p:g} | {num(r.init_ssim)} | {num(r.ssim_mean)} |"
                  for r in ladder.rows]
        lines.append("")
    return lines


def _curve_lines(curves: Sequence[Curve]) -> list[str]:
    if not curves:
        return []
    lines = ["## Defence strength: leakage and utility", "",
             "Defended cases of one configuration whose defence chains differ in one parameter: the most leaking "
             "image's SSIM, whether the challenge set re-identified an image, the ε the defence accounts for, and "
             "the update's utility (cosine to the undefended update, held-out descent relative to the undefended "
             "update's).", ""]
    for curve in curves:
        lines += [f"### {_cell(curve.title)}", ""]
        if curve.png is not None:
            lines += [f"![leakage and utility vs {_cell(curve.defence)}]({curve.filename})", ""]
        lines += ["| " + " | ".join(CURVE_COLUMNS) + " |",
                  "|" + "".join("---|" if c == "re-identified" else "---:|" for c in CURVE_COLUMNS)]
        lines += ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in table_cells(curve)]
        lines += ["", "Cases: " + ", ".join(_code(row.case_id) for row in curve.rows), ""]
    return lines
