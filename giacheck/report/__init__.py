"""Merge result files from several runs, workers or machines into one report people would rather look at.

``load_results`` reads the suites' ``results.json`` (``{"profile", "cases": [record, …]}``), their
``results.jsonl`` journals (:mod:`giacheck.records`), single result JSONs written by ``giacheck run --out`` and
folders holding any of these; rows are keyed by (profile, suite, case id) and later files win. ``write_report``
writes

- ``report.html``: self-contained (inline CSS, PNGs embedded as data URIs, nothing fetched): a verdict table,
  per suite a grid laid out like the paper's figures (originals above reconstructions, case id and SSIM
  under each), and the Figure 4 ladder (``-init_p`` cases) per architecture as an SSIM-vs-noise plot and as an
  image grid ordered by noise fraction, and per family of defended cases (``-def_`` chains of one configuration
  that differ in one token's value, :mod:`giacheck.report.curves`) leakage and utility against the defence's
  strength, with the reconstructions by strength;
- ``report.md``: the same table, ladder and defence tables, with links to the PNGs;
- ``ladder-<architecture>.png``: the ladder plots, ``curve-<case>-def_<chain>.png`` the defence curves
  (matplotlib, Agg canvas; no global backend switch).

It writes only into a new or empty folder, or one holding nothing but what giacheck wrote there (listed in
its :data:`giacheck.outputs.MANIFEST`); a folder with anything else in it, or one it cannot write into, is refused
and left untouched. A result file is read only when it is one (a regular, non-empty file of bounded size), its case
ids are read by the case grammar before they name any file, and a PNG is embedded only from inside the folder of
its result file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from giacheck.errors import GiacheckError
from giacheck.jsonio import write_bytes_atomic
from giacheck.outputs import MANIFEST, check_output_folder, claim_outputs
from giacheck.report.curves import curves as find_curves
from giacheck.report.layout import ladders as find_ladders
from giacheck.report.render_html import render_html
from giacheck.report.render_md import render_markdown
from giacheck.report.rows import CaseRow, load_results

__all__ = ["MANIFEST", "WRITER", "CaseRow", "load_results", "write_report"]

log = logging.getLogger("giacheck.report")

WRITER = "report"  # how the output manifest names what this module wrote
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 64 * 2**20  # a case's grid is a few hundred kB; a larger file is shown as missing, not embedded


def write_report(rows: Sequence[CaseRow], out_dir: str | os.PathLike[str], *,
                 keep: Iterable[str] = (), summary: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, the ladder plots and the defence curves into ``out_dir``.

    ``keep`` names entries of ``out_dir`` that belong to the caller: they are neither refused nor touched.
    ``summary``: lines shown first, under the title (an audit's verdict).

    Returns:
        ``{"html": …, "md": …, "ladder:<architecture>": …, "curve:<name>": …}`` (paths of the files written).

    Raises:
        GiacheckError: no rows, ``out_dir`` is a file, cannot be created or written, or holds files giacheck did
            not write (named; nothing is written then); a write that fails midway (named).
    """
    if not rows:
        raise GiacheckError("no cases to report")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GiacheckError(f"--out {out}: is a file, not a folder; nothing was written. Choose a folder for the "
                            "report: new, empty, or a previous report")
    try:  # also refuses a folder that cannot be written (under a file, read-only, /proc): nothing is written
        owned = check_output_folder(out, command="giacheck report", keep=keep)
    except OSError as exc:
        raise GiacheckError(f"--out {out}: cannot be read ({exc.strerror or exc}); nothing was written") from None
    previous = {name for name, writer in owned.items() if writer == WRITER}
    images = {row.key: _png_bytes(row) for row in rows}
    ladders = find_ladders(rows)
    curves = find_curves(rows)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    files: dict[str, tuple[str, bytes]] = {
        "html": ("report.html", render_html(rows, images, ladders, generated, summary, curves=curves).encode("utf-8")),
        "md": ("report.md", render_markdown(rows, images, ladders, out, generated, summary,
                                            curves=curves).encode("utf-8")),
    }
    for ladder in ladders:
        if ladder.png is not None:
            files[f"ladder:{ladder.architecture}"] = (ladder.filename, ladder.png)
    for curve in curves:
        if curve.png is not None:
            files[f"curve:{curve.name}"] = (curve.filename, curve.png)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = {key: write_bytes_atomic(data, out / name) for key, (name, data) in files.items()}
        names = {path.name for path in written.values()}
        claim_outputs(out, WRITER, names, replace=True)
    except OSError as exc:  # the folder was writable when checked; a full disk, or it changed since
        raise GiacheckError(f"--out {out}: writing the report failed ({exc}); files written before the failure "
                            "are complete, none is half-written") from None
    for stale in sorted(previous - names):  # plots of architectures or defence families no longer in the results
        path = out / stale
        if path.is_file() and not path.is_symlink():
            path.unlink()
    log.info("wrote %s (%d cases, %d without image)", written["html"], len(rows),
             sum(images[r.key] is None for r in rows))
    return written


def _png_bytes(row: CaseRow) -> bytes | None:
    if row.image is None:
        return None
    try:
        size = row.image.stat().st_size
        if size > MAX_PNG_BYTES:
            log.warning("%s: %s is %d MiB, larger than a case's image (at most %d MiB); shown without image",
                        row.case_id, row.image, size // 2**20, MAX_PNG_BYTES // 2**20)
            return None
        data = row.image.read_bytes()
    except OSError as exc:
        log.warning("%s: cannot read %s (%s)", row.case_id, row.image, exc)
        return None
    if not data.startswith(_PNG_SIGNATURE):
        log.warning("%s: %s is not a PNG; shown without image", row.case_id, row.image)
        return None
    return data
