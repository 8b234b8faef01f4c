"""Merge result files from several runs, workers or machines into one report people would rather look at.

``load_results`` reads the suites' ``results.json`` (``{"profile", "cases": [payload, …]}``), their
``results.jsonl`` journals, single result JSONs written by ``giacheck run --out`` and folders holding any of
these; rows are keyed by (profile, suite, case id) and later files win. ``write_report`` writes

- ``report.html``: self-contained (inline CSS, PNGs embedded as data URIs, nothing fetched): a verdict table,
  per suite a grid laid out like the paper's figures (originals above reconstructions, case id and SSIM
  under each), and the Figure 4 ladder (``-init_p`` cases) per architecture as an SSIM-vs-noise plot and as an
  image grid ordered by noise fraction;
- ``report.md``: the same table and ladder, with links to the PNGs;
- ``ladder-<architecture>.png``: the ladder plots (matplotlib, Agg canvas; no global backend switch).

It writes only into a new or empty folder, or one holding nothing but a previous report (its files are
listed in ``.giacheck-report.json``); a folder with anything else in it is refused and left untouched.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from giacheck.claims import shown_verdict
from giacheck.errors import GiacheckError

__all__ = ["MANIFEST", "CaseRow", "load_results", "write_report"]

log = logging.getLogger("giacheck.report")

MANIFEST = ".giacheck-report.json"  # lists the files a report wrote, so a rerun may replace them (and only them)
RESULTS_JSON, RESULTS_JSONL = "results.json", "results.jsonl"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INIT_P = re.compile(r"-init_p(?P<p>\d+(?:\.\d+)?)")
_ACCEPTED = ("a suite results.json ({'profile', 'cases': [...]}), a results.jsonl journal, "
             "a `giacheck run --out` <case-id>.json, or a folder holding them")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseRow:
    """One case's numbers and verdict as the report shows it; ``image`` is None when its PNG was not found."""

    profile: str
    suite: str  # "" for a result from `giacheck run` outside any suite
    case_id: str
    ssim_mean: float
    ssim_max: float
    patch_ssim_mean: float | None = None
    claim: str | None = None  # None: a single run, no claim was asserted
    verdict: str | None = None
    outcome: str | None = None  # pytest outcome of the test that recorded it
    message: str = ""
    baseline_status: str | None = None
    baseline_recorded: float | None = None
    init_ssim: float | None = None  # controlled initialization: SSIM of the attack's starting point
    wall_s: float | None = None
    image: Path | None = None
    source: Path

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.profile, self.suite, self.case_id)

    @property
    def init_p(self) -> float | None:
        """Noise fraction of a Figure 4 ladder case (``-init_pP``), else None."""
        match = _INIT_P.search(self.case_id)
        return float(match["p"]) if match else None

    @property
    def shown_verdict(self) -> str:
        """The verdict as the suite summary prints it (a baseline failure turns a passing claim into fail(base))."""
        return shown_verdict(self.claim, self.verdict, self.outcome)

    @property
    def shown_baseline(self) -> str:
        if self.baseline_recorded is not None:
            return f"{self.baseline_recorded:.3f} ({self.baseline_status})"
        return self.baseline_status or "—"


# ------------------------------------------------------------------------------------------------ loading
def load_results(paths: Iterable[str | os.PathLike[str]]) -> list[CaseRow]:
    """Read result files and folders and merge their cases; later files win for the same (profile, suite, case).

    Raises:
        GiacheckError: a path that does not exist, a file that is not valid JSON or not a result (named),
            or no case at all.
    """
    merged: dict[tuple[str, str, str], CaseRow] = {}
    given = [Path(p) for p in paths]
    for path in given:
        if not path.exists():
            raise GiacheckError(f"{path}: no such file or folder (expected {_ACCEPTED})")
        files = list(_result_files(path)) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise GiacheckError(f"{path}: no {RESULTS_JSON}, {RESULTS_JSONL} or result JSON found in this folder")
        for file in files:
            for row in _read_file(file, explicit=not path.is_dir()):
                merged.pop(row.key, None)  # re-insert: the merged order follows the latest writer
                merged[row.key] = row
    if not merged:
        raise GiacheckError(f"no cases in {', '.join(map(str, given)) or '(no paths given)'}")
    missing = [row for row in merged.values() if row.image is None]
    for row in missing:
        log.warning("%s (%s): no PNG found next to %s", row.case_id, row.suite or "run", row.source)
    return sorted(merged.values(), key=lambda r: r.key)


def _result_files(folder: Path) -> Iterator[Path]:
    """Result files under ``folder``: a folder with results.json/.jsonl yields those (its subfolders hold the
    same run's artifacts and are not read); otherwise its result JSONs, and the same for its subfolders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        runs = [name for name in (RESULTS_JSON, RESULTS_JSONL) if name in files]  # json first: the journal is newer
        if runs:
            dirs[:] = []
            yield from (here / name for name in runs)
            continue
        yield from (here / name for name in sorted(files) if name.endswith(".json") and not name.startswith("."))


def _read_file(path: Path, *, explicit: bool) -> list[CaseRow]:
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(_read_text(path).splitlines(), start=1):
            if line.strip():
                where = f"{path}, line {number}"
                rows.append(_payload_row(_parse(line, where), path.parent, path, where))
        return rows
    data = _parse(_read_text(path), str(path))
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        return [_payload_row(case, path.parent, path, f"{path}, cases[{i}]") for i, case in enumerate(data["cases"])]
    if isinstance(data, dict) and "suite" in data and "result" in data:
        return [_payload_row(data, path.parent, path, str(path))]
    if isinstance(data, dict) and "case_id" in data and "ssim" in data:
        return [_single_row(data, path)]
    if explicit:
        raise GiacheckError(f"{path}: valid JSON but not a giacheck result (expected {_ACCEPTED})")
    log.debug("skipping %s: not a giacheck result", path)
    return []


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GiacheckError(f"{path}: cannot read ({exc})") from exc


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GiacheckError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _field(data: Any, dotted: str, where: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    value = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise GiacheckError(f"{where}: missing {dotted!r}: not a giacheck result, or written by another version")
        value = value[part]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GiacheckError(f"{where}: {dotted!r} is {value!r}, expected {getattr(kind, '__name__', 'a number')}")
    return value


def _optional_number(data: Any, dotted: str) -> float | None:
    value = data
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _result_numbers(result: Any, where: str) -> dict[str, Any]:
    return {
        "ssim_mean": float(_field(result, "ssim.mean", where)),
        "ssim_max": float(_field(result, "ssim.max", where)),
        "patch_ssim_mean": _optional_number(result, "secondary.patch_matched_ssim.mean"),
        "init_ssim": _optional_number(result, "threat.init_ssim"),
    }


def _payload_row(payload: Any, base: Path, source: Path, where: str) -> CaseRow:
    """A row from one suite payload; its PNG lies at ``<artifacts>/<profile>/<suite>/<case-id>.png``."""
    if not isinstance(payload, dict):
        raise GiacheckError(f"{where}: expected a case object, got {type(payload).__name__}")
    suite, case_id = _field(payload, "suite", where, str), _field(payload, "case_id", where, str)
    profile = payload.get("profile") or _field(payload, "result.profile", where, str)
    baseline = payload.get("baseline") if isinstance(payload.get("baseline"), dict) else {}
    return CaseRow(
        profile=str(profile), suite=suite, case_id=case_id, **_result_numbers(payload.get("result"), f"{where}.result"),
        claim=_str_or_none(payload.get("claim")), verdict=_str_or_none(payload.get("verdict")),
        outcome=_str_or_none(payload.get("outcome")), message=str(payload.get("message") or ""),
        baseline_status=_str_or_none(baseline.get("status")), baseline_recorded=_optional_number(baseline, "recorded"),
        wall_s=_optional_number(payload, "wall_s"),
        image=_first_file(base / str(profile) / suite / f"{case_id}.png", base / f"{case_id}.png"), source=source,
    )


def _single_row(result: dict[str, Any], path: Path) -> CaseRow:
    """A row from a ``Result.to_dict()`` file; inside an artifacts tree (``…/<profile>/<suite>/x.json``) the
    folder names give the suite, else the row belongs to no suite."""
    where = str(path)
    case_id, profile = _field(result, "case_id", where, str), _field(result, "profile", where, str)
    suite = path.parent.name if path.parent.parent.name == profile else ""
    return CaseRow(profile=profile, suite=suite, case_id=case_id, **_result_numbers(result, where),
                   wall_s=_optional_number(result, "timings.total_s"),
                   image=_first_file(path.with_name(f"{case_id}.png"), path.with_suffix(".png")), source=path)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


# ------------------------------------------------------------------------------------------------ writing
@dataclass(frozen=True, slots=True, kw_only=True)
class _Ladder:
    """Figure 4 ladder of one architecture: its cases by noise fraction, and the rendered plot."""

    architecture: str
    rows: tuple[CaseRow, ...]
    filename: str
    png: bytes | None  # None when matplotlib is missing


def write_report(rows: Sequence[CaseRow], out_dir: str | os.PathLike[str], *,
                 keep: Iterable[str] = (), summary: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and the ladder plots into ``out_dir``.

    ``keep`` names entries of ``out_dir`` that belong to the caller (``giacheck audit`` puts its results there):
    they are neither refused nor touched. ``summary``: lines shown first, under the title (an audit's verdict).

    Returns:
        ``{"html": …, "md": …, "ladder:<architecture>": …}`` (paths of the files written).

    Raises:
        GiacheckError: no rows, ``out_dir`` is a file, or it holds files this function did not write (named;
            nothing is written then).
    """
    if not rows:
        raise GiacheckError("no cases to report")
    out = Path(out_dir)
    previous = _owned_files(out, set(keep))
    images = {row.key: _png_bytes(row) for row in rows}
    ladders = _ladders(rows)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    files: dict[str, tuple[str, bytes]] = {
        "html": ("report.html", _html(rows, images, ladders, generated, summary).encode("utf-8")),
        "md": ("report.md", _markdown(rows, images, ladders, out, generated, summary).encode("utf-8")),
    }
    for ladder in ladders:
        if ladder.png is not None:
            files[f"ladder:{ladder.architecture}"] = (ladder.filename, ladder.png)
    out.mkdir(parents=True, exist_ok=True)
    written = {key: _write_atomic(out / name, data) for key, (name, data) in files.items()}
    names = sorted(path.name for path in written.values())
    _write_atomic(out / MANIFEST, (json.dumps({"files": names}, indent=2) + "\n").encode())
    for stale in previous - set(names):  # plots of architectures no longer in the results
        (out / stale).unlink(missing_ok=True)
    log.info("wrote %s (%d cases, %d without image)", written["html"], len(rows),
             sum(images[r.key] is None for r in rows))
    return written


def _owned_files(out: Path, keep: set[str]) -> set[str]:
    """Names a previous report wrote into ``out``; raises when ``out`` holds anything else."""
    if out.exists() and not out.is_dir():
        raise GiacheckError(f"--out {out}: is a file, not a folder")
    if not out.exists():
        return set()
    entries = sorted(e for e in out.iterdir() if e.name not in keep)
    if not entries:
        return set()
    owned: set[str] = set()
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            owned = {str(name) for name in json.loads(manifest.read_text())["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            owned = set()
    foreign = [e.name + ("/" if e.is_dir() else "") for e in entries
               if e.name != MANIFEST and (e.name not in owned or not e.is_file() or e.is_symlink())]
    if foreign or not manifest.is_file():
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise GiacheckError(f"--out {out}: the folder already holds files giacheck report did not write "
                            f"({shown or 'no ' + MANIFEST}); nothing was written. Choose a new or empty folder.")
    return owned


def _write_atomic(path: Path, data: bytes) -> Path:
    """Temp file in the same folder + rename; created with mode 0o666 & ~umask (mkstemp's 0o600 would hide a
    report from the people it is for)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _png_bytes(row: CaseRow) -> bytes | None:
    if row.image is None:
        return None
    try:
        data = row.image.read_bytes()
    except OSError as exc:
        log.warning("%s: cannot read %s (%s)", row.case_id, row.image, exc)
        return None
    if not data.startswith(_PNG_SIGNATURE):
        log.warning("%s: %s is not a PNG; shown without image", row.case_id, row.image)
        return None
    return data


def _ladders(rows: Sequence[CaseRow]) -> list[_Ladder]:
    """Group ``-init_p`` cases by architecture (the model, the case id's first field) and plot each group."""
    by_case: dict[tuple[str, str], CaseRow] = {}
    for row in rows:
        if row.init_p is not None:
            by_case[(row.profile, row.case_id)] = row  # the same case under two suites: one point
    groups: dict[str, list[CaseRow]] = {}
    for row in by_case.values():
        groups.setdefault(row.case_id.split("-", 1)[0], []).append(row)
    ladders = []
    for architecture, members in sorted(groups.items()):
        members.sort(key=lambda r: (r.profile, _series(r), r.init_p))
        filename = f"ladder-{re.sub(r'[^A-Za-z0-9_.-]', '_', architecture)}.png"
        ladders.append(_Ladder(architecture=architecture, rows=tuple(members), filename=filename,
                               png=_ladder_png(architecture, members)))
    return ladders


def _series(row: CaseRow) -> str:
    """The configuration a ladder point belongs to: the case id without model and noise fraction."""
    rest = _INIT_P.sub("", row.case_id).split("-", 1)
    return rest[1] if len(rest) > 1 else rest[0]


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
        label = _series(row) + (f" [{row.profile}]" if len(profiles) > 1 else "")
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


# ------------------------------------------------------------------------------------------------ rendering
def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _suites(rows: Sequence[CaseRow]) -> dict[tuple[str, str], list[CaseRow]]:
    groups: dict[tuple[str, str], list[CaseRow]] = {}
    for row in rows:
        groups.setdefault((row.profile, row.suite), []).append(row)
    return groups


def _suite_title(profile: str, suite: str, profiles: set[str]) -> str:
    name = suite or "single runs (giacheck run)"
    return f"{name} [{profile}]" if len(profiles) > 1 else name


def _verdict_class(shown: str) -> str:
    """A CSS class from a fixed set (never user text)."""
    for prefix, css in (("xfail", "xfail"), ("fail", "fail"), ("pass", "pass"), ("inconclusive", "inconclusive"),
                        ("regression", "regression")):
        if shown.startswith(prefix):
            return css
    return "other"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _caption(row: CaseRow) -> str:
    start = f" (start {row.init_ssim:.2f})" if row.init_ssim is not None else ""
    return f"SSIM {row.ssim_mean:.2f}{start}"


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
.ladder { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.ladder img { max-width: 620px; width: 100%; border: 1px solid var(--line); }
.ladder table { width: auto; }
"""


def _html(rows: Sequence[CaseRow], images: dict[tuple[str, str, str], bytes | None], ladders: Sequence[_Ladder],
          generated: str, summary: Sequence[str] = ()) -> str:
    esc = html.escape
    profiles = {row.profile for row in rows}
    suites = _suites(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.shown_verdict] = counts.get(row.shown_verdict, 0) + 1
    sources = sorted({str(row.source) for row in rows})
    out = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>giacheck report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        "<header><h1>giacheck report: gradient-inversion leakage</h1>",
        f'<p class="meta">{len(rows)} cases · profile {esc(", ".join(sorted(profiles)))} · generated {esc(generated)}'
        + (f" · from {esc(', '.join(sources))}</p>" if len(sources) <= 3 else
           f'</p><details class="sources"><summary>from {len(sources)} result files</summary><ul>'
           + "".join(f"<li>{esc(source)}</li>" for source in sources) + "</ul></details>"),
        '<p class="counts">' + "".join(f'<span class="{_verdict_class(v)}">{esc(v)}: {n}</span>'
                                       for v, n in sorted(counts.items())) + "</p>"
        + "".join(f'<p class="summary">{esc(line)}</p>' for line in summary) + "</header>",
        '<nav><a href="#verdicts">verdicts</a>'
        + "".join(f'<a href="#suite-{i}">{esc(_suite_title(p, s, profiles))}</a>' for i, (p, s) in enumerate(suites))
        + ('<a href="#ladder">Figure 4 ladder</a>' if ladders else "") + "</nav>",
        '<section id="verdicts"><h2>Verdicts</h2><table><thead><tr>',
        "<th>Suite</th><th>Case id</th><th>Claim</th><th class=\"num\">SSIM mean</th><th class=\"num\">SSIM max</th>"
        "<th class=\"num\">Patch-matched</th><th>Baseline</th><th>Verdict</th>",
        "</tr></thead><tbody>",
    ]
    for row in rows:
        shown = row.shown_verdict
        out.append(
            f"<tr><td>{esc(_suite_title(row.profile, row.suite, profiles))}</td>"
            f'<td class="id">{esc(row.case_id)}</td><td>{esc(row.claim or "—")}</td>'
            f'<td class="num">{_num(row.ssim_mean)}</td><td class="num">{_num(row.ssim_max)}</td>'
            f'<td class="num">{_num(row.patch_ssim_mean)}</td><td>{esc(row.shown_baseline)}</td>'
            f'<td class="verdict {_verdict_class(shown)}" title="{esc(row.message)}">{esc(shown)}</td></tr>')
    out.append("</tbody></table>")
    out.append('<p class="note">SSIM: standard SSIM after matching reconstructions to originals (Hungarian); '
               "claims use it. Patch-matched: secondary, permutation-tolerant SSIM. Baseline: recorded SSIM mean "
               "(check status). Hover a verdict for the claim's message.</p></section>")
    for index, ((profile, suite), members) in enumerate(suites.items()):
        out.append(f'<section id="suite-{index}"><h2>{esc(_suite_title(profile, suite, profiles))}</h2>')
        out.append('<div class="grid"><div class="rowlabels"><span>original</span><span>reconstruction</span></div>')
        out.extend(_html_figure(row, images[row.key]) for row in members)
        out.append("</div></section>")
    if ladders:
        out.append('<section id="ladder"><h2>Figure 4 ladder: SSIM against the noise of a controlled start</h2>')
        out.append('<p class="note">Each case starts the attack from the true image with a fraction p of its pixels '
                   "replaced by noise; solid: SSIM after the attack, dashed: SSIM of the start.</p>")
        for ladder in ladders:
            out.append(f"<h3>{esc(ladder.architecture)}</h3><div class=\"ladder\">")
            if ladder.png is not None:
                out.append(f'<img src="{_data_uri(ladder.png)}" alt="{esc("SSIM vs noise, " + ladder.architecture)}">')
            out.append('<div class="grid"><div class="rowlabels"><span>original</span><span>reconstruction</span>'
                       "</div>")  # the ladder as an image grid too, by noise fraction
            out.extend(_html_figure(row, images[row.key]) for row in ladder.rows)
            out.append("</div>")
            out.append('<table><thead><tr><th>Case id</th><th class="num">p</th><th class="num">start SSIM</th>'
                       '<th class="num">SSIM</th></tr></thead><tbody>')
            out.extend(f'<tr><td class="id">{esc(r.case_id)}</td><td class="num">{r.init_p:g}</td>'
                       f'<td class="num">{_num(r.init_ssim)}</td><td class="num">{_num(r.ssim_mean)}</td></tr>'
                       for r in ladder.rows)
            out.append("</tbody></table></div>")
        out.append("</section>")
    missing = [row for row in rows if images[row.key] is None]
    if missing:
        out.append('<section id="missing"><h2>Cases without an image</h2><ul>')
        out.extend(f'<li><span class="id">{esc(row.case_id)}</span> ({esc(row.suite or "run")}): '
                   f"{esc(str(row.image) if row.image else 'no PNG next to ' + str(row.source))}</li>"
                   for row in missing)
        out.append("</ul></section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_figure(row: CaseRow, png: bytes | None) -> str:
    esc = html.escape
    if png is not None:
        alt = esc(f"{row.case_id}: originals above reconstructions")
        picture = f'<img class="case" src="{_data_uri(png)}" alt="{alt}">'
    else:
        picture = '<div class="noimage">no image</div>'
    case_id = esc(row.case_id).replace("-", "-<wbr>")
    return (f'<figure>{picture}<figcaption class="caption"><div class="id">{case_id}</div>'
            f'<div class="ssim">{esc(_caption(row))}</div></figcaption></figure>')


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_posix()


def _markdown(rows: Sequence[CaseRow], images: dict[tuple[str, str, str], bytes | None], ladders: Sequence[_Ladder],
              out: Path, generated: str, summary: Sequence[str] = ()) -> str:
    profiles = {row.profile for row in rows}
    lines = [
        "# giacheck report: gradient-inversion leakage", "",
        f"{len(rows)} cases · profile {', '.join(sorted(profiles))} · generated {generated}. "
        "Images are embedded in `report.html`.", "", *[f"**{_md_cell(line)}**  " for line in summary],
        *([""] if summary else []),
        "## Verdicts", "",
        "| suite | case id | claim | SSIM mean | SSIM max | patch-matched | baseline | verdict |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    lines.extend(
        f"| {_md_cell(_suite_title(r.profile, r.suite, profiles))} | `{_md_cell(r.case_id)}`"
        f" | {_md_cell(r.claim or '—')}"
        f" | {_num(r.ssim_mean)} | {_num(r.ssim_max)} | {_num(r.patch_ssim_mean)} | {_md_cell(r.shown_baseline)}"
        f" | {_md_cell(r.shown_verdict)} |" for r in rows)
    lines += ["", "SSIM: standard SSIM after Hungarian matching (claims use it); patch-matched: secondary, "
              "permutation-tolerant.", ""]
    if ladders:
        lines += ["## Figure 4 ladder: SSIM against the noise of a controlled start", ""]
        for ladder in ladders:
            lines += [f"### {ladder.architecture}", ""]
            if ladder.png is not None:
                lines += [f"![SSIM vs noise, {ladder.architecture}]({ladder.filename})", ""]
            lines += ["| case id | p | start SSIM | SSIM |", "|---|---:|---:|---:|"]
            lines += [f"| `{_md_cell(r.case_id)}` | {r.init_p:g} | {_num(r.init_ssim)} | {_num(r.ssim_mean)} |"
                      for r in ladder.rows]
            lines.append("")
    lines += ["## Images (originals above reconstructions)", ""]
    for (profile, suite), members in _suites(rows).items():
        lines += [f"### {_suite_title(profile, suite, profiles)}", ""]
        for r in members:
            where = f"[PNG](<{_relative(r.image, out)}>)" if images[r.key] is not None and r.image else "no image"
            lines.append(f"- `{_md_cell(r.case_id)}`: {_caption(r)}, {where}")
        lines.append("")
    return "\n".join(lines) + "\n"
