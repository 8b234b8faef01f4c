"""Reading result files into report rows: suite ``results.json``/``results.jsonl`` (case records), single
``giacheck run --out`` result JSONs, and folders holding them; later files win for the same case."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.jsonio import read_json
from giacheck.records import RESULTS_JSON, RESULTS_JSONL, CaseRecord, is_records_document, read_records, records_from
from giacheck.specs import Case

__all__ = ["CaseRow", "load_results"]

log = logging.getLogger("giacheck.report")

_ACCEPTED = ("a suite results.json ({'profile', 'cases': [...]}), a results.jsonl journal, "
             "a `giacheck run --out` <case-id>.json, or a folder holding them")


@lru_cache(maxsize=4096)
def _case(case_id: str) -> Case | None:
    """The parsed case id, or None for an id the grammar does not read (shown, never in a ladder)."""
    try:
        return Case.parse(case_id)
    except InvalidCaseError:
        return None


# The evidence columns of the verdict tables (CaseRow.evidence_cells), in order
EVIDENCE_COLUMNS = ("k×s", "most leaking image: SSIM", "re-id rank", "z", "chance q95", "re-identified", "content",
                    "negative", "objective vs truth's")
EVIDENCE_NOTE = ("Each case runs over a challenge set (k private images × s seeds); the verdict uses its most leaking "
                 "image. Re-id rank: the rank of the image's SSIM to its reconstruction among the reconstruction's "
                 "SSIMs to a held-out pool (1 = identified); z against the pool; chance q95: the pool's 95th "
                 "percentile. Re-identified: images with a Bonferroni-corrected p ≤ α / m. Content: semantic "
                 "(re-identified by SSIM: a leak), displaced (only by the patch-matched score, against its own chance "
                 "level), none. Negative: attack-limited (the attack stopped above the objective of the true images) "
                 "or information-limited (it reached it). SSIM is reported, never compared with a fixed cutoff.")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseRow:
    """One case as the report shows it: its record, the file it came from, its PNG (None when not found)."""

    record: CaseRecord
    source: Path
    image: Path | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.record.key

    @property
    def profile(self) -> str:
        return self.record.profile

    @property
    def suite(self) -> str:
        return self.record.suite

    @property
    def case_id(self) -> str:
        return self.record.case_id

    @property
    def claim(self) -> str | None:
        return None if self.record.claim is None else str(self.record.claim)

    @property
    def message(self) -> str:
        return self.record.message

    @property
    def ssim_mean(self) -> float:
        return self.record.scores.ssim_mean

    @property
    def ssim_max(self) -> float:
        return self.record.scores.ssim_max

    @property
    def patch_ssim_mean(self) -> float | None:
        return self.record.scores.patch_ssim_mean

    @property
    def init_ssim(self) -> float | None:
        return self.record.scores.init_ssim

    def evidence_cells(self) -> tuple[str, ...]:
        """The verdict's evidence as table cells (:data:`EVIDENCE_COLUMNS`); dashes for a single run."""
        ev = self.record.evidence
        if ev is None:
            return ("—",) * len(EVIDENCE_COLUMNS)
        return (str(ev.trials), f"{ev.worst_image} {ev.worst_ssim:.3f}", ev.shown_rank, f"{ev.z:+.1f}",
                f"{ev.chance_q95:.3f}", f"{ev.reidentified}/{ev.tested}", ev.content,
                ev.limitation if ev.content != "semantic" else "—", ev.shown_objective)

    @property
    def init_p(self) -> float | None:
        """Noise fraction of a Figure 4 ladder case (``-init_pP``), else None."""
        case = _case(self.case_id)
        return None if case is None else case.init_p

    @property
    def architecture(self) -> str:
        """The model of the case (its id's first field)."""
        case = _case(self.case_id)
        return self.case_id.split("-", 1)[0] if case is None else case.model.name

    @property
    def series(self) -> str:
        """The configuration a ladder point belongs to: the case id without model and noise fraction."""
        case = _case(self.case_id)
        if case is None:
            return self.case_id
        return case.with_(init_p=None).id.removeprefix(f"{case.model.name}-")

    @property
    def shown_verdict(self) -> str:
        """The verdict as the suite summary prints it (a baseline failure turns a passing claim into fail(base))."""
        return self.record.shown_verdict

    @property
    def shown_baseline(self) -> str:
        return self.record.shown_baseline


def load_results(paths: Iterable[str | os.PathLike[str]]) -> list[CaseRow]:
    """Read result files and folders and merge their cases; later files win for the same (profile, suite, case).

    Raises:
        GiacheckError: a path that does not exist, a file that is not valid JSON or not a result (named),
            a record of another schema version, or no case at all.
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
    for row in merged.values():
        if row.image is None:
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
        return [_record_row(record, path) for record in read_records(path)]
    data = read_json(path)
    if is_records_document(data):
        return [_record_row(record, path) for record in records_from(data, str(path))]
    if isinstance(data, dict) and "case_id" in data and "ssim" in data:
        return [_single_row(data, path)]
    if explicit:
        raise GiacheckError(f"{path}: valid JSON but not a giacheck result (expected {_ACCEPTED})")
    log.debug("skipping %s: not a giacheck result", path)
    return []


def _record_row(record: CaseRecord, source: Path) -> CaseRow:
    """A suite's case; its PNG lies at ``<artifacts>/<profile>/<suite>/<case-id>.png``."""
    base = source.parent
    image = _first_file(base / record.profile / record.suite / f"{record.case_id}.png", base / f"{record.case_id}.png")
    return CaseRow(record=record, source=source, image=image)


def _single_row(result: dict[str, Any], path: Path) -> CaseRow:
    """A row from a ``Result.to_dict()`` file; inside an artifacts tree (``…/<profile>/<suite>/x.json``) the
    folder names give the suite, else the row belongs to no suite."""
    profile = result.get("profile")
    if not isinstance(profile, str):
        raise GiacheckError(f"{path}: 'profile' is {profile!r}, expected a profile name")
    suite = path.parent.name if path.parent.parent.name == profile else ""
    timings = result.get("timings")
    total = timings.get("total_s") if isinstance(timings, dict) else None
    wall = float(total) if isinstance(total, int | float) and not isinstance(total, bool) else None
    record = _from_result(result, path, suite=suite, profile=profile, wall_s=wall)
    image = _first_file(path.with_name(f"{record.case_id}.png"), path.with_suffix(".png"))
    return CaseRow(record=record, source=path, image=image)


def _from_result(result: dict[str, Any], path: Path, **fields: Any) -> CaseRecord:
    try:
        return CaseRecord.from_result(result, claim=None, baseline=None, origin=None, **fields)
    except GiacheckError as exc:  # name the file
        raise GiacheckError(f"{path}: {exc}") from None


def _first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)
