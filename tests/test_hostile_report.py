"""Hostile inputs to ``giacheck report RESULTS... --out DIR``: result files whose case ids would name files outside
the results folder or put markup into the report, PNG links out of the folder, files that are no result files, and
output folders that cannot be written. Each row exits 2 with a message naming what was wrong and what is valid,
before any compute, leaving every file (the results and the ``--out`` folder's previous report) byte-identical.

Beyond the table: a non-finite SSIM is shown as such and never as a passing (no leak) verdict, and a profile or
suite that is not a plain folder name is never used to look up a PNG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _hostile import assert_unchanged, forbid_compute, snapshot
from PIL import Image

from giacheck.claims import ClaimResult
from giacheck.cli import main
from giacheck.records import CaseRecord
from giacheck.report import load_results, write_report

ENABLED = "resnet18_cifar-32-bn_eval-bs1-stats_none"
TRAIN = "resnet18_cifar-32-bn_train-bs1-stats_none"


def _png(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path)
    return path


def _result(case_id: str, ssim: float) -> dict[str, Any]:
    return {"case_id": case_id, "profile": "smoke", "ssim": {"mean": ssim, "max": ssim, "per_image": [ssim]},
            "threat": {"labels": "known", "stats": "none"}}


def _payload(suite: str, case_id: str, ssim: float, *, claim: str = "infeasible") -> dict[str, Any]:
    """A case record as the plugin writes it into results.json / results.jsonl (built for a valid id, then the id
    is replaced, as a hand-edited file would have it)."""
    judged = ClaimResult(kind=claim, case_id=ENABLED, verdict="pass", measured=ssim, threshold=0.025,
                         message=f"SSIM {ssim}")
    record = CaseRecord.from_result(_result(ENABLED, ssim), suite=suite, profile="smoke", claim=judged,
                                    baseline=None, wall_s=1.0, origin="computed", outcome="passed").to_json()
    record["case_id"] = record["result"]["case_id"] = case_id
    return record


def _suite_run(folder: Path, payloads: list[dict[str, Any]], *, name: str = "results.json") -> Path:
    """What the plugin leaves in ``--giacheck-artifacts``: results.json (or the journal) and the PNGs of valid ids."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(p) + "\n" for p in payloads))
    else:
        path.write_text(json.dumps({"profile": "smoke", "cases": payloads}))
    return path


@dataclass(frozen=True)
class World:
    """A tmp_path holding a valid run, a previous report in ``out``, and a PNG outside every results folder."""

    root: Path
    run: Path  # a valid results.json
    out: Path  # holds the previous report: must stay byte-identical
    secret: Path  # a PNG no report may embed


@pytest.fixture
def world(tmp_path: Path) -> World:
    run = _suite_run(tmp_path / "run", [_payload("test_table1", ENABLED, 0.02)])
    _png(run.parent / "smoke" / "test_table1" / f"{ENABLED}.png")
    out = tmp_path / "out"
    write_report(load_results([run]), out)
    secret = _png(tmp_path / "elsewhere" / "secret.png", colour=(0, 0, 255))
    return World(root=tmp_path, run=run, out=out, secret=secret)


# --------------------------------------------------------------------------------------------------- row setups
def _bad_id(case_id: str, *, name: str = "results.json") -> Callable[[World], list[str]]:
    def setup(w: World) -> list[str]:
        return [str(_suite_run(w.root / "hostile", [_payload("test_table1", case_id, 0.02)], name=name)),
                "--out", str(w.out)]
    return setup


def _traversal_to_secret(w: World) -> list[str]:
    """``../../../elsewhere/secret``: from <run>/smoke/test_table1/ this names the secret PNG."""
    path = _suite_run(w.root / "hostile", [_payload("test_table1", "../../../elsewhere/secret", 0.02)])
    (w.root / "hostile" / "smoke" / "test_table1").mkdir(parents=True)
    return [str(path), "--out", str(w.out)]


def _absolute_to_secret(w: World) -> list[str]:
    return [str(_suite_run(w.root / "hostile", [_payload("s", str(w.secret.with_suffix("")), 0.02)])),
            "--out", str(w.out)]


def _single_run_bad_id(w: World) -> list[str]:
    path = w.root / "runs" / "result.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_result("../elsewhere/secret", 0.9)))
    return [str(path.parent), "--out", str(w.out)]


def _png_link_outside(w: World) -> list[str]:
    path = _suite_run(w.root / "hostile", [_payload("test_table1", TRAIN, 0.02)])
    link = w.root / "hostile" / "smoke" / "test_table1" / f"{TRAIN}.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(w.secret)
    return [str(path), "--out", str(w.out)]


def _suite_folder_link_outside(w: World) -> list[str]:
    path = _suite_run(w.root / "hostile", [_payload("test_table1", TRAIN, 0.02)])
    _png(w.root / "elsewhere" / "test_table1" / f"{TRAIN}.png")
    (w.root / "hostile" / "smoke").symlink_to(w.root / "elsewhere")
    return [str(path), "--out", str(w.out)]


def _file(name: str, content: bytes) -> Callable[[World], list[str]]:
    def setup(w: World) -> list[str]:
        path = w.root / "hostile" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return [str(path), "--out", str(w.out)]
    return setup


def _folder_named_results_json(w: World) -> list[str]:
    (w.root / "hostile" / "results.json").mkdir(parents=True)
    return [str(w.root / "hostile" / "results.json"), "--out", str(w.out)]


def _empty_folder(w: World) -> list[str]:
    (w.root / "hostile").mkdir()
    return [str(w.root / "hostile"), "--out", str(w.out)]


def _link_to_dev_zero(w: World) -> list[str]:
    (w.root / "hostile").mkdir()
    (w.root / "hostile" / "results.json").symlink_to("/dev/zero")  # read whole, it would never end
    return [str(w.root / "hostile"), "--out", str(w.out)]


def _huge(w: World) -> list[str]:
    """A valid results.json over the size limit (lowered for the row): refused before it is parsed."""
    payload = _payload("test_table1", TRAIN, 0.02)
    payload["message"] = "x" * 70_000
    return [str(_suite_run(w.root / "hostile", [payload])), "--out", str(w.out)]


def _out(where: Callable[[World], Path]) -> Callable[[World], list[str]]:
    return lambda w: [str(w.run), "--out", str(where(w))]


def _under_a_file(w: World) -> Path:
    (w.root / "notes.txt").write_text("mine")
    return w.root / "notes.txt" / "report"


def _read_only(w: World) -> Path:
    folder = w.root / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "report"


def _holding_foreign(w: World) -> Path:
    (w.root / "mine").mkdir()
    (w.root / "mine" / "notes.txt").write_text("do not touch")
    return w.root / "mine"


AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                             reason="root writes into a read-only folder: nothing to refuse")
NO_PROC = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")

# (setup: the argv after "report"; words the message must hold: what was wrong and what is valid)
ROWS = [
    pytest.param(_traversal_to_secret, ["results.json", "'../../../elsewhere/secret'", "valid: letters, digits"],
                 id="case-id-traversal-to-a-png-outside"),
    pytest.param(_absolute_to_secret, ["results.json", "elsewhere/secret'", "holds characters no case id has",
                                       "MODEL-RES-bn_"], id="case-id-absolute-path"),
    pytest.param(_bad_id("../x", name="results.jsonl"), ["results.jsonl", "'../x'", "valid"],
                 id="case-id-traversal-in-a-journal"),
    pytest.param(_single_run_bad_id, ["result.json", "'../elsewhere/secret'", "valid"],
                 id="case-id-traversal-in-a-run-result"),
    pytest.param(_bad_id(ENABLED + "\n"), ["results.json", repr(ENABLED + "\n"), "valid"],
                 id="case-id-trailing-newline"),
    pytest.param(_bad_id("resnet18|`x`|<b>"), ["results.json", "'resnet18|`x`|<b>'", "valid"],
                 id="case-id-markdown-and-html"),
    pytest.param(_bad_id("not-a-case"), ["results.json", "malformed case id 'not-a-case'", "expected MODEL-RES"],
                 id="case-id-not-in-the-grammar"),
    pytest.param(_png_link_outside, [f"{TRAIN}.png", "outside the results folder", "must lie inside"],
                 id="png-symlink-outside"),
    pytest.param(_suite_folder_link_outside, [f"{TRAIN}.png", "outside the results folder", "must lie inside"],
                 id="png-folder-symlink-outside"),
    pytest.param(_file("results.json", b""), ["results.json", "is empty", "expected a suite results.json"],
                 id="results-empty-file"),
    pytest.param(_folder_named_results_json, ["results.json", "no results.json, results.jsonl or result JSON"],
                 id="results-json-is-a-folder"),
    pytest.param(_empty_folder, ["hostile", "no results.json, results.jsonl or result JSON"],
                 id="results-empty-folder"),
    pytest.param(_link_to_dev_zero, ["results.json", "not a regular file", "expected a suite results.json"],
                 id="results-link-to-dev-zero"),
    pytest.param(lambda w: ["/dev/null", "--out", str(w.out)], ["/dev/null", "not a regular file", "expected"],
                 id="results-device"),
    pytest.param(_huge, ["results.json", "larger than any result file", "at most 65,536 bytes"], id="results-huge"),
    pytest.param(_file("results.json", b"[1, 2]"), ["results.json", "not a giacheck result", "expected"],
                 id="results-json-list"),
    pytest.param(_file("results.json", b'{"profile": "smoke", "cases": [1]}'),
                 ["cases[0]", "expected a case record (an object), got int"], id="results-case-not-an-object"),
    pytest.param(_file("results.json", b'{"profile": "smoke", "cases": []}'),
                 ["no cases in", "expected at least one case"], id="results-no-cases"),
    pytest.param(_file("results.json", b'{"profile": "smoke", "cases": ['),
                 ["results.json: malformed JSON", "expected a suite results.json"], id="results-malformed-json"),
    pytest.param(_file("results.json", b"\x89PNG\r\n\x1a\n\xff\xfe"),
                 ["results.json: cannot read", "expected a suite results.json"], id="results-binary"),
    pytest.param(lambda w: [str(w.root / "absent.json"), "--out", str(w.out)],
                 ["absent.json: no such file or folder", "expected"], id="results-missing"),
    pytest.param(_out(_under_a_file), ["notes.txt/report", "notes.txt is a file", "nothing was written",
                                       "whose parents are folders"], id="out-under-a-file"),
    pytest.param(_out(lambda w: w.run), ["results.json: is a file, not a folder", "Choose a folder"],
                 id="out-is-a-result-file"),
    pytest.param(_out(lambda w: Path("/proc/giacheck-report")), ["--out /proc/giacheck-report", "/proc ",
                                                                  "nothing was written", "folder you can write to"],
                 id="out-under-proc", marks=NO_PROC),
    pytest.param(_out(_read_only), ["read-only/report", "read-only is not writable", "nothing was written",
                                    "folder you can write to"], id="out-read-only-folder", marks=AS_ROOT),
    pytest.param(_out(_holding_foreign), ["notes.txt", "did not write", "Choose a new or empty folder"],
                 id="out-holds-foreign-files"),
]


@pytest.mark.parametrize(("setup", "words"), ROWS)
def test_hostile_report_input(setup: Callable[[World], list[str]], words: list[str], world: World,
                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("giacheck.report.rows.MAX_RESULT_BYTES", 64 * 1024)  # the huge row, without 256 MiB
    argv = setup(world)
    guard = forbid_compute(monkeypatch)
    roots = [world.root, *(Path(a) for a in argv if a.startswith("/proc"))]
    before = snapshot(*roots)
    try:
        assert main(["report", *argv]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("giacheck: error: ")
        for word in words:
            assert word in captured.err, f"{word!r} not in {captured.err!r}"
        assert "Traceback" not in captured.err
        assert not guard.ran
        assert_unchanged(before, *roots)
    finally:
        if (world.root / "read-only").exists():
            (world.root / "read-only").chmod(0o755)


def test_the_table_has_at_least_twelve_rows() -> None:
    assert len({row.id for row in ROWS}) == len(ROWS) >= 12


# --------------------------------------------------------------------------------------------------- beyond the table
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_ssim_is_no_evidence_of_no_leak(value: str, world: World,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An infeasible claim recorded as passing with a NaN SSIM: shown as n/a and inconclusive, never as pass."""
    payload = _payload("test_table1", TRAIN, 0.02)
    text = json.dumps({"profile": "smoke", "cases": [payload]}).replace('"ssim_mean": 0.02', f'"ssim_mean": {value}')
    path = world.root / "nan" / "results.json"
    path.parent.mkdir()
    path.write_text(text)
    assert main(["report", str(path), "--out", str(world.root / "nan-report")]) == 0
    capsys.readouterr()
    md = (world.root / "nan-report" / "report.md").read_text()
    page = (world.root / "nan-report" / "report.html").read_text()
    assert "| inconclusive (non-finite SSIM) |" in md and "SSIM n/a (non-finite)" in md
    assert "| pass |" not in md and "nan" not in md.lower().replace("non-finite", "")
    assert 'class="verdict inconclusive"' in page and "inconclusive (non-finite SSIM): 1" in page
    assert "SSIM n/a (non-finite)" in page and ">pass<" not in page


def test_profile_and_suite_that_are_no_folder_names_never_build_a_path(world: World) -> None:
    """A profile of ``../..``: the row is reported (its text escaped), its PNG is not looked up through it."""
    payload = _payload("..", TRAIN, 0.02)
    payload["profile"] = "../elsewhere"
    path = _suite_run(world.root / "hostile", [payload])
    _png(world.root / f"{TRAIN}.png")  # where <run>/<profile>/<suite>/<id>.png would lead: outside the run
    rows = load_results([path])
    assert rows[0].image is None
    written = write_report(rows, world.root / "traversal-report")
    assert 'src="data:image/png' not in written["html"].read_text()
    _png(path.parent / f"{TRAIN}.png")  # the PNG next to the results file is still found
    assert load_results([path])[0].image == path.parent / f"{TRAIN}.png"


def test_a_link_inside_the_results_folder_is_followed(world: World) -> None:
    """Only links out of the folder are refused: a PNG linked from within it is embedded."""
    path = _suite_run(world.root / "hostile", [_payload("test_table1", TRAIN, 0.02)])
    real = _png(world.root / "hostile" / "pngs" / "grid.png")
    link = world.root / "hostile" / "smoke" / "test_table1" / f"{TRAIN}.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    assert load_results([path])[0].image == link
