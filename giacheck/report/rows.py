"""Reading result files into report rows: suite ``results.json``/``results.jsonl`` (case records), single
``giacheck run --out`` result JSONs, and folders holding them; later files win for the same case. A case id is
read by the case grammar before it names a file, and a PNG is taken only from inside its result file's folder."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.jsonio import read_json
from giacheck.records import (
    RESULTS_JSON,
    RESULTS_JSONL,
    CaseRecord,
    is_records_document,
    lookup,
    read_records,
    records_from,
)
from giacheck.specs import ID_FORM, Case

__all__ = ["MAX_RESULT_BYTES", "NON_FINITE", "CaseRow", "check_case_id", "load_results", "shown_score"]

log = logging.getLogger("giacheck.report")

_ACCEPTED = ("a suite results.json ({'profile', 'cases': [...]}), a results.jsonl journal, "
             "a `giacheck run --out` <case-id>.json, or a folder holding them")
MAX_RESULT_BYTES = 256 * 2**20  # a results.json of thousands of cases is a few MB; more is not a result file
NON_FINITE = "n/a (non-finite)"  # how a NaN or infinite score is shown
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9_.:+-]+")  # every character the case grammar spells (no space, no slash)


@lru_cache(maxsize=4096)
def _case(case_id: str) -> Case | None:
    """The parsed case id, or None for an id the grammar does not read (a row built by hand: shown, never in a
    ladder; :func:`load_results` refuses such ids)."""
    try:
        return Case.parse(case_id)
    except InvalidCaseError:
        return None


def check_case_id(case_id: str, where: Path) -> None:
    """Refuse a case id read from a result file unless the case grammar reads it, before it names any file.

    Raises:
        GiacheckError: naming the file, the id and the valid form.
    """
    if not _ID_CHARACTERS.fullmatch(case_id):
        raise GiacheckError(f"{where}: case id {case_id!r} holds characters no case id has (valid: letters, digits "
                            f"and _ . : + -, in the form {ID_FORM}); the file was not written by giacheck or was "
                            "altered, so no report was written")
    try:
        Case.parse(case_id)
    except InvalidCaseError as exc:
        raise GiacheckError(f"{where}: {exc}; the file was not written by giacheck or was altered, so no report was "
                            "written") from None


def shown_score(value: float | None, digits: int = 3) -> str:
    """A score as tables show it: ``—`` when absent, :data:`NON_FINITE` for NaN or infinity."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if math.isfinite(value) else NON_FINITE


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
        z = f"{ev.z:+.1f}" if not math.isnan(ev.z) else NON_FINITE  # +inf: a pool without spread
        return (str(ev.trials), f"{ev.worst_image} {shown_score(ev.worst_ssim)}", ev.shown_rank, z,
                shown_score(ev.chance_q95), f"{ev.reidentified}/{ev.tested}", ev.content,
                ev.limitation if ev.content != "semantic" else "—", ev.shown_objective)

    @property
    def non_finite(self) -> tuple[str, ...]:
        """The SSIM scores of this case that are NaN or infinite (a broken computation or an altered file)."""
        scores, ev = self.record.scores, self.record.evidence
        values = {"ssim_mean": scores.ssim_mean, "ssim_max": scores.ssim_max,
                  **{f"ssim[{i}]": v for i, v in enumerate(scores.ssim)}}
        if ev is not None:
            values |= {"worst_ssim": ev.worst_ssim, "chance_q95": ev.chance_q95}
        return tuple(name for name, value in values.items() if not math.isfinite(value))

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
    def defences(self) -> tuple[str, ...]:
        """The client's defence chain (the ``-def_`` tokens, in the order applied); () for an undefended case."""
        case = _case(self.case_id)
        return () if case is None else case.client.defences

    @property
    def undefended_id(self) -> str | None:
        """The id of the same case without its defence chain; None for an undefended case."""
        case = _case(self.case_id)
        if case is None or not case.client.defences:
            return None
        return case.with_(client=replace(case.client, defences=())).id

    @property
    def worst_ssim(self) -> float:
        """The most leaking image's SSIM: the challenge set's ``max_ssim``, else the run's ``ssim.max``."""
        value = _number(lookup(self.record.result, "challenge.max_ssim"))
        return self.ssim_max if value is None else value

    @property
    def reidentified(self) -> bool | None:
        """Whether the challenge set re-identified an image (``reidentified`` > 0 or ``leaks``); None without one."""
        challenge = self.record.result.get("challenge")
        if not isinstance(challenge, Mapping):
            return None
        count, leaks = _number(challenge.get("reidentified")), challenge.get("leaks")
        if leaks is True or (count is not None and count > 0):
            return True
        return False if leaks is False or count is not None else None

    def utility(self, name: str) -> float | None:
        """``utility.<name>`` of the result (``cosine``, ``descent``, ``relative_descent``); None when
        the case recorded none (an undefended case, an older result)."""
        return _number(lookup(self.record.result, f"utility.{name}"))

    @property
    def captured_client(self) -> str | None:
        """A captured framework client's round in one line (``threat.framework``): the framework and version,
        the client, what the server sent and saw, and what the replica assumed; None for a simulated client."""
        fw = lookup(self.record.result, "threat.framework")
        if not isinstance(fw, Mapping):
            return None
        sent = fw.get("sent_by_server") if isinstance(fw.get("sent_by_server"), Mapping) else {}
        returned = fw.get("returned") if isinstance(fw.get("returned"), Mapping) else {}
        replica = fw.get("replica") if isinstance(fw.get("replica"), Mapping) else {}
        extra = fw.get("server_config") if isinstance(fw.get("server_config"), Mapping) else {}
        config = ", ".join(f"{k} {v}" for k, v in {**sent, **extra}.items())
        return (f"captured from {fw.get('framework', '?')} {fw.get('version', '')} client {fw.get('target', '?')}: "
                f"server sent {config}; it returned {returned.get('kind', '?')} ({returned.get('arrays', '?')} "
                f"arrays{', BatchNorm buffers' if returned.get('batchnorm_buffers') else ''}); "
                + (f"replica {replica.get('bn_mode', '?')}-mode BatchNorm, " if returned.get("batchnorm_buffers")
                   else "")
                + str(replica.get("assumed", "")))

    @property
    def epsilons(self) -> tuple[tuple[str, float], ...]:
        """``(defence token, ε)`` of each noise-adding defence ``threat.privacy`` accounts for; ε is infinite for
        an entry marked ``"bounded": false`` (no noise)."""
        privacy = lookup(self.record.result, "threat.privacy")
        if not isinstance(privacy, list):
            return ()
        return tuple((str(entry.get("defence", "")), epsilon) for entry in privacy
                     if isinstance(entry, Mapping) and (epsilon := _epsilon(entry)) is not None)

    @property
    def shown_verdict(self) -> str:
        """The verdict as the suite summary prints it (a baseline failure turns a passing claim into fail(base)); a
        case whose SSIM is not finite is inconclusive whatever was recorded: NaN is no evidence of no leak."""
        if self.non_finite:
            return "inconclusive (non-finite SSIM)" if self.record.claim is not None else "no claim (non-finite SSIM)"
        return self.record.shown_verdict

    @property
    def shown_baseline(self) -> str:
        return self.record.shown_baseline


def _epsilon(entry: Mapping[str, Any]) -> float | None:
    """The ε of one ``threat.privacy`` entry: infinite when it is marked unbounded, else its number (None if
    it has none)."""
    return math.inf if entry.get("bounded") is False else _number(entry.get("epsilon"))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def load_results(paths: Iterable[str | os.PathLike[str]]) -> list[CaseRow]:
    """Read result files and folders and merge their cases; later files win for the same (profile, suite, case).

    Raises:
        GiacheckError: a path that does not exist, a file that is empty, not a regular file, larger than
            :data:`MAX_RESULT_BYTES`, not valid JSON or not a result (named), a record of another schema version,
            a case id the case grammar does not read, a PNG that resolves outside its results folder, or no case.
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
        raise GiacheckError(f"no cases in {', '.join(map(str, given)) or '(no paths given)'}; expected at least one "
                            f"case: {_ACCEPTED}")
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


def _check_result_file(path: Path) -> None:
    """Refuse what cannot be a result file before reading it: a folder, a device or pipe, an empty or huge file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GiacheckError(f"{path}: cannot read ({exc.strerror or exc}); expected {_ACCEPTED}") from None
    if not path.is_file():
        raise GiacheckError(f"{path}: not a regular file (a device, a pipe or a socket); expected {_ACCEPTED}")
    if size == 0:
        raise GiacheckError(f"{path}: the file is empty; expected {_ACCEPTED}")
    if size > MAX_RESULT_BYTES:
        raise GiacheckError(f"{path}: {size:,} bytes, larger than any result file (at most {MAX_RESULT_BYTES:,} "
                            f"bytes); expected {_ACCEPTED}")


def _read_file(path: Path, *, explicit: bool) -> list[CaseRow]:
    _check_result_file(path)
    if path.suffix == ".jsonl":
        return [_record_row(record, path) for record in read_records(path)]
    try:
        data = read_json(path)
    except GiacheckError as exc:
        raise GiacheckError(f"{exc}; expected {_ACCEPTED}") from None
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
    check_case_id(record.case_id, source)
    base, name = source.parent, f"{record.case_id}.png"
    nested = [base / record.profile / record.suite / name] if _plain(record.profile) and _plain(record.suite) else []
    return CaseRow(record=record, source=source, image=_png_inside(base, *nested, base / name))


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
    check_case_id(record.case_id, path)
    image = _png_inside(path.parent, path.with_name(f"{record.case_id}.png"), path.with_suffix(".png"))
    return CaseRow(record=record, source=path, image=image)


def _from_result(result: dict[str, Any], path: Path, **fields: Any) -> CaseRecord:
    try:
        return CaseRecord.from_result(result, claim=None, baseline=None, origin=None, **fields)
    except GiacheckError as exc:  # name the file
        raise GiacheckError(f"{path}: {exc}") from None


def _plain(name: str) -> bool:
    """Whether ``name`` (a profile or suite read from a file) names one entry of a folder: no separator, not
    ``..``; another name is shown, never used to build a path."""
    return name not in (".", "..") and not any(c in name for c in "/\\\0")


def _png_inside(base: Path, *candidates: Path) -> Path | None:
    """The first candidate that is a file; one that resolves outside ``base`` (a symbolic link out of the results
    folder) is refused, so that a report never embeds a file from elsewhere.

    Raises:
        GiacheckError: naming the link, where it leads and the folder a case's PNG must lie in.
    """
    root = base.resolve()
    for candidate in candidates:
        if not candidate.is_file():
            continue
        target = candidate.resolve()
        if not target.is_relative_to(root):
            raise GiacheckError(f"{candidate}: the PNG of this case leads to {target}, outside the results folder "
                                f"{root}; a case's PNG must lie inside the folder of its result file, not be a link "
                                "out of it, so no report was written")
        return candidate
    return None
