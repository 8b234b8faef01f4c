"""``report.html``: self-contained (inline CSS, PNGs embedded as data URIs, nothing fetched): a verdict table,
per suite a grid laid out like the paper's figures, the Figure 4 ladders and the defence curves. Every text is
escaped."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from giacheck.report.curves import COLUMNS as CURVE_COLUMNS
from giacheck.report.curves import Curve, table_cells
from giacheck.report.layout import Ladder, caption, num, suite_title, suites
from giacheck.report.rows import EVIDENCE_COLUMNS, EVIDENCE_NOTE, CaseRow

__all__ = ["render_html"]

Images = dict[tuple[str, str, str], bytes | None]

_CSS = """
:root { --fg: #1d2330; --muted: #5b6476; --line: #d9dde5; --bg: #ffffff; --panel: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 24px 32px 48px; color: var(--fg); background: var(--bg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
.meta, .note { color: var(--muted); font-size: 12px; }
.summary { font-weight: 600; margin: 4px 0; }
.counts span { display: inline-block; margin: 6px 8px 0 0; padding: 2px 8px; border-radius: 10px; font-size: 12px; }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 13px; }
details.sources { font-size: 12px; color: var(--muted); }
details.sources li { overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); position: sticky; top: 0; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.id, .caption .id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
td.id { font-size: 12px; }
.pass { background: #e3f4e6; color: #1f6b30; }
.fail { background: #fbe4e4; color: #9b1c1c; }
.inconclusive { background: #fff3d6; color: #855a00; }
.xfail { background: #eceef2; color: #4a5263; }
.regression { background: #e6eefb; color: #244f8f; }
.other { background: #eceef2; color: #4a5263; }
td.verdict { font-weight: 600; white-space: nowrap; }
.grid { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 14px 10px; padding: 10px;
        background: var(--panel); border-radius: 6px; }
.rowlabels { display: flex; flex-direction: column; width: 24px; }
.rowlabels span { height: 128px; writing-mode: vertical-rl; transform: rotate(180deg); text-align: center;
                  font-size: 11px; color: var(--muted); }
figure { margin: 0; width: min-content; }
figure img.case { display: block; height: 256px; width: auto; image-rendering: pixelated; background: #000; }
figure .noimage { display: flex; align-items: center; justify-content: center; width: 128px; height: 256px;
                  border: 1px dashed #a0a7b4; color: var(--muted); font-size: 12px; text-align: center; }
.caption { min-width: 128px; font-size: 11px; line-height: 1.3; margin-top: 4px; overflow-wrap: anywhere; }
.caption .ssim { font-weight: 600; font-size: 12px; }
.caption .client { font-size: 11px; color: #555; max-width: 32em; }
.ladder { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.ladder img { max-width: 620px; width: 100%; border: 1px solid var(--line); }
.ladder table { width: auto; }
.ladder.curve img { max-width: 1100px; }
"""


def _verdict_class(shown: str) -> str:
    """A CSS class from a fixed set (never user text)."""
    for prefix, css in (("xfail", "xfail"), ("fail", "fail"), ("pass", "pass"), ("inconclusive", "inconclusive"),
                        ("regression", "regression")):
        if shown.startswith(prefix):
            return css
    return "other"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(rows: Sequence[CaseRow], images: Images, ladders: Sequence[Ladder], generated: str,
                summary: Sequence[str] = (), *, curves: Sequence[Curve] = ()) -> str:
    """The whole page: header, verdict table, one image grid per suite, the ladders, the defence curves, the cases
    without image."""
    profiles = {row.profile for row in rows}
    out = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>giacheck report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        *_header(rows, profiles, generated, summary, bool(ladders), bool(curves)),
        *_verdict_table(rows, profiles),
    ]
    for index, ((profile, suite), members) in enumerate(suites(rows).items()):
        out.append(f'<section id="suite-{index}"><h2>{html.escape(suite_title(profile, suite, profiles))}</h2>')
        out.append(_grid(members, images))
        out.append("</section>")
    if ladders:
        out.extend(_ladder_section(ladders, images))
    if curves:
        out.extend(_curve_section(curves, images))
    out.extend(_missing_section(rows, images))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _header(rows: Sequence[CaseRow], profiles: set[str], generated: str, summary: Sequence[str],
            has_ladders: bool, has_curves: bool = False) -> list[str]:
    esc = html.escape
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.shown_verdict] = counts.get(row.shown_verdict, 0) + 1
    sources = sorted({str(row.source) for row in rows})
    return [
        "<header><h1>giacheck report: gradient-inversion leakage</h1>",
        f'<p class="meta">{len(rows)} cases · profile {esc(", ".join(sorted(profiles)))} · generated {esc(generated)}'
        + (f" · from {esc(', '.join(sources))}</p>" if len(sources) <= 3 else
           f'</p><details class="sources"><summary>from {len(sources)} result files</summary><ul>'
           + "".join(f"<li>{esc(source)}</li>" for source in sources) + "</ul></details>"),
        '<p class="counts">' + "".join(f'<span class="{_verdict_class(v)}">{esc(v)}: {n}</span>'
                                       for v, n in sorted(counts.items())) + "</p>"
        + "".join(f'<p class="summary">{esc(line)}</p>' for line in summary) + "</header>",
        '<nav><a href="#verdicts">verdicts</a>'
        + "".join(f'<a href="#suite-{i}">{esc(suite_title(p, s, profiles))}</a>'
                  for i, (p, s) in enumerate(suites(rows)))
        + ('<a href="#ladder">Figure 4 ladder</a>' if has_ladders else "")
        + ('<a href="#curves">defence curves</a>' if has_curves else "") + "</nav>",
    ]


def _verdict_table(rows: Sequence[CaseRow], profiles: set[str]) -> list[str]:
    esc = html.escape
    out = [
        '<section id="verdicts"><h2>Verdicts</h2><table><thead><tr>',
        "<th>Suite</th><th>Case id</th><th>Claim</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in EVIDENCE_COLUMNS)
        + "<th>Baseline</th><th>Verdict</th>",
        "</tr></thead><tbody>",
    ]
    for row in rows:
        shown = row.shown_verdict
        out.append(
            f"<tr><td>{esc(suite_title(row.profile, row.suite, profiles))}</td>"
            f'<td class="id">{esc(row.case_id)}</td><td>{esc(row.claim or "—")}</td>'
            + "".join(f'<td class="num">{esc(c)}</td>' for c in row.evidence_cells())
            + f'<td>{esc(row.shown_baseline)}</td>'
            f'<td class="verdict {_verdict_class(shown)}" title="{esc(row.message)}">{esc(shown)}</td></tr>')
    out.append("</tbody></table>")
    out.append(f'<p class="note">{esc(EVIDENCE_NOTE)} Hover a verdict for the claim\'s message.</p></section>')
    return out


def _grid(rows: Sequence[CaseRow], images: Images) -> str:
    """Originals above reconstructions, one figure per case."""
    return ('<div class="grid"><div class="rowlabels"><span>original</span><span>reconstruction</span></div>'
            + "".join(_figure(row, images[row.key]) for row in rows) + "</div>")


def _ladder_section(ladders: Sequence[Ladder], images: Images) -> list[str]:
    esc = html.escape
    out = ['<section id="ladder"><h2>Figure 4 ladder: SSIM against the noise of a controlled start</h2>',
           '<p class="note">Each case starts the attack from the true image with a fraction p of its pixels '
           "replaced by noise; solid: SSIM after the attack, dashed: SSIM of the start.</p>"]
    for ladder in ladders:
        out.append(f"<h3>{esc(ladder.architecture)}</h3><div class=\"ladder\">")
        if ladder.png is not None:
            out.append(f'<img src="{_data_uri(ladder.png)}" alt="{esc("SSIM vs noise, " + ladder.architecture)}">')
        out.append(_grid(ladder.rows, images))  # the ladder as an image grid too, by noise fraction
        out.append('<table><thead><tr><th>Case id</th><th class="num">p</th><th class="num">start SSIM</th>'
                   '<th class="num">SSIM</th></tr></thead><tbody>')
        out.extend(f'<tr><td class="id">{esc(r.case_id)}</td><td class="num">{r.init_p:g}</td>'
                   f'<td class="num">{num(r.init_ssim)}</td><td class="num">{num(r.ssim_mean)}</td></tr>'
                   for r in ladder.rows)
        out.append("</tbody></table></div>")
    out.append("</section>")
    return out


def _curve_section(curves: Sequence[Curve], images: Images) -> list[str]:
    esc = html.escape
    out = ['<section id="curves"><h2>Defence strength: leakage and utility</h2>',
           '<p class="note">Defended cases of one configuration whose defence chains differ in one parameter. Left: '
           "the SSIM of the most leaking image against the defence's strength (filled: re-identified, hollow: not), "
           "with the ε the defence accounts for; dashed: the undefended case. Right: utility, the defended update's "
           "cosine to the undefended one and its held-out descent relative to the undefended one's (dashed: "
           "undefended, 1). Below: the reconstructions by strength.</p>"]
    for curve in curves:
        out.append(f'<h3>{esc(curve.title)}</h3><div class="ladder curve">')
        if curve.png is not None:
            out.append(f'<img src="{_data_uri(curve.png)}" alt="{esc("leakage and utility vs " + curve.title)}">')
        out.append("<table><thead><tr>" + _curve_cells("th", CURVE_COLUMNS) + "</tr></thead><tbody>")
        out.extend(f"<tr>{_curve_cells('td', cells)}</tr>" for cells in table_cells(curve))
        out.append("</tbody></table></div>")
        out.append(_grid(curve.rows, images))  # the image ladder, by strength
    out.append("</section>")
    return out


def _curve_cells(tag: str, cells: Sequence[str]) -> str:
    """A row of a curve's table: numbers right-aligned, the re-identified column as text."""
    attrs = ["" if column == "re-identified" else ' class="num"' for column in CURVE_COLUMNS]
    return "".join(f"<{tag}{attr}>{html.escape(cell)}</{tag}>" for attr, cell in zip(attrs, cells, strict=True))


def _missing_section(rows: Sequence[CaseRow], images: Images) -> list[str]:
    esc = html.escape
    missing = [row for row in rows if images[row.key] is None]
    if not missing:
        return []
    return ['<section id="missing"><h2>Cases without an image</h2><ul>',
            *(f'<li><span class="id">{esc(row.case_id)}</span> ({esc(row.suite or "run")}): '
              f"{esc(str(row.image) if row.image else 'no PNG next to ' + str(row.source))}</li>" for row in missing),
            "</ul></section>"]


def _figure(row: CaseRow, png: bytes | None) -> str:
    esc = html.escape
    if png is not None:
        alt = esc(f"{row.case_id}: originals above reconstructions")
        picture = f'<img class="case" src="{_data_uri(png)}" alt="{alt}">'
    else:
        picture = '<div class="noimage">no image</div>'
    case_id = esc(row.case_id).replace("-", "-<wbr>")
    return (f'<figure>{picture}<figcaption class="caption"><div class="id">{case_id}</div>'
            f'<div class="ssim">{esc(caption(row))}</div>'
            + (f'<div class="client">{esc(row.captured_client)}</div>' if row.captured_client else "")
            + "</figcaption></figure>")
