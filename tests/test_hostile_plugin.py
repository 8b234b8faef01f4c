"""Hostile inputs to the pytest plugin: ``--giacheck-*`` options and their ini twins, the artifacts folder,
recorded baselines and baselines an update cannot write. Each row is refused before any compute, with a message
naming what was wrong and what is valid, and leaves every file of the project byte-identical."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch  # noqa: F401  here, not in a test: pytester drops modules first imported during a test
from _hostile import forbid_compute, snapshot

import giacheck.bench
import giacheck.runner  # noqa: F401  (the modules forbid_compute patches, imported before any in-process run)
from giacheck.outputs import MANIFEST
from giacheck.plugin.options import _CHECKS, OPTIONS

pytest_plugins = ["pytester"]

CASE = "lenet_sigmoid-16-bn_eval-bs1-stats_none"
SUITE = f'''
from giacheck.specs import AttackSpec, RunOptions


def test_case(gia):
    gia.regression("{CASE}", options=RunOptions(budget=AttackSpec(iterations=2)))


def test_plain():
    pass
'''
BASELINE = f"baselines/smoke/test_suite/{CASE}.json"
GOOD = b'{"case_id": "%s", "profile": "smoke", "ssim": {"mean": 0.2}}\n' % CASE.encode()
# workers under xdist are other processes: this conftest stops any compute there (and here), and says so
GUARD = '''
import giacheck.runner

_SAVED = {}


def _refuse(*args, **kwargs):
    raise RuntimeError("COMPUTE STARTED")


def pytest_configure(config):
    for name in ("simulate_update", "prepare_state"):
        _SAVED[name] = getattr(giacheck.runner, name)
        setattr(giacheck.runner, name, _refuse)


def pytest_unconfigure(config):
    for name, value in _SAVED.items():
        setattr(giacheck.runner, name, value)
'''
QUIET = ("-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:hypothesispytest")  # hypothesis: 7 s an import
USAGE = pytest.ExitCode.USAGE_ERROR
FAILED = pytest.ExitCode.TESTS_FAILED


@dataclass(frozen=True)
class Row:
    """One hostile input: the command line, ini lines and files it starts from; the exit status, words of the
    message, and (for a failed test) the outcomes."""

    id: str
    args: tuple[str, ...] = ()
    ini: str = ""
    files: dict[str, bytes | None] = field(default_factory=dict)  # None: a folder
    exit: pytest.ExitCode = USAGE
    words: tuple[str, ...] = ()
    failed: int = 0  # tests failed (exit TESTS_FAILED); test_plain still passes


ROWS = [
    # numbers that would switch a check off, on the command line and in the ini file
    Row("tolerance-nan", ("--giacheck-tolerance", "nan"),
        words=("--giacheck-tolerance='nan'", "finite number >= 0", "NaN or inf would let every baseline check pass")),
    Row("tolerance-nan-ini", ini="giacheck_tolerance = nan",
        words=("giacheck_tolerance='nan' (ini file", "tox.ini", "finite number >= 0")),
    Row("tolerance-negative", ("--giacheck-tolerance", "-0.01"), words=("'-0.01'", "finite number >= 0")),
    Row("tolerance-above-one", ("--giacheck-tolerance", "1.5"),
        words=("--giacheck-tolerance='1.5'", "every baseline check pass", "valid: a finite number in [0, 1)")),
    Row("trials-not-a-number", ("--giacheck-trials", "abc"),
        words=("--giacheck-trials='abc'", "valid: 0 to 10000")),
    Row("trials-negative-ini", ini="giacheck_trials = -3", words=("giacheck_trials='-3' (ini file", "0 to 10000")),
    Row("trials-unicode-digit", ("--giacheck-trials", "²"), words=("--giacheck-trials='²'", "0 to 10000")),
    Row("threads-zero", ("--giacheck-threads", "0"),
        words=("--giacheck-threads='0'", "positive number or 'auto'", "1 to 1024")),
    Row("gpus-not-ids", ("--giacheck-gpus", "abc,def"),
        words=("--giacheck-gpus='abc,def'", "not GPU ids: 'abc', 'def'", "GPU indices (0,1,2)")),
    Row("gpus-twice-ini", ini="giacheck_gpus = 0,0", words=("giacheck_gpus='0,0'", "listed twice: '0'", "once")),
    Row("gpus-empty-entry", ("--giacheck-gpus", "0,,1"), words=("not GPU ids: ''",)),
    Row("gpus-names-with-n-auto", ("-n", "auto", "--giacheck-gpus", "abc,def", "--giacheck-device", "cuda"),
        words=("--giacheck-gpus='abc,def'", "not GPU ids")),  # -n auto counted them; no worker starts
    Row("device-typo", ("--giacheck-device", "gpu"), words=("--giacheck-device='gpu'", "'cpu', 'cuda' and 'cuda:N'")),
    Row("profile-typo-ini", ini="giacheck_profile = turbo",
        words=("giacheck_profile='turbo'", "valid values are 'smoke' and 'paper'")),
    Row("state-ckpt", ("--giacheck-state", "ckpt"), words=("--giacheck-state='ckpt'", "--giacheck-weights MODEL=PATH")),
    Row("storage-neither", ("--giacheck-storage", "study.db"),
        words=("--giacheck-storage='study.db'", "neither an RDB URL nor a journal file", "sqlite:///")),
    Row("storage-no-folder", ("--giacheck-storage", "nowhere/study.log"),
        words=("'nowhere/study.log'", "folder 'nowhere' does not exist")),
    Row("attack-bad-import-form", ("--giacheck-attack", "pkg:mod:Name"),
        words=("--giacheck-attack='pkg:mod:Name'", "package.module:Name")),
    Row("weights-not-a-file", ("--giacheck-weights", "lenet_sigmoid=missing.safetensors"),
        words=("'missing.safetensors' is not a file", "never downloads")),
    # folders
    Row("artifacts-empty", ("--giacheck-artifacts", ""), words=("--giacheck-artifacts=''", "give a folder path")),
    Row("artifacts-is-a-file", ("--giacheck-artifacts", "notes.txt"), files={"notes.txt": b"mine\n"},
        words=("--giacheck-artifacts='notes.txt'", "is a file, not a folder")),
    Row("artifacts-holds-users-results", ("--giacheck-artifacts", "mine"),
        files={"mine/results.json": b'{"mine": true}\n', "mine/results.jsonl": b"{}\n"},
        words=("--giacheck-artifacts='mine'", "did not write (results.json, results.jsonl)", "left untouched",
               "Choose a new or empty folder")),
    Row("artifacts-default-folder-of-another-tool", files={"giacheck-artifacts/smoke/x.png": b"png"},
        words=("giacheck_artifacts='giacheck-artifacts' (the default)", "did not write (smoke/)")),
    Row("baselines-is-a-file", ("--giacheck-baselines", "notes.txt"), files={"notes.txt": b"mine\n"},
        words=("--giacheck-baselines='notes.txt'", "is a file, not a folder")),
    # recorded baselines: validated at collection, never rewritten (not even by an update flag)
    Row("baseline-nan", files={BASELINE: b'{"ssim": {"mean": NaN}}'},
        words=("corrupt baseline", BASELINE, "key 'ssim.mean' is NaN", "finite numbers only", "left untouched")),
    Row("baseline-infinity-in-challenge", ("--giacheck-update",),
        files={BASELINE: b'{"ssim": {"mean": 0.2}, "challenge": {"max_ssim": Infinity}}'},
        words=(BASELINE, "key 'challenge.max_ssim' is Infinity", "never overwritten")),
    Row("baseline-true-is-not-a-number", files={BASELINE: b'{"ssim": {"mean": 0.2}, "challenge": {"max_ssim": true}}'},
        words=(BASELINE, "key 'challenge.max_ssim' is true (a boolean)", "valid: a finite number in [-1, 1]")),
    Row("baseline-is-a-folder", ("--giacheck-update-all",), files={BASELINE: None},
        words=(BASELINE, "is a folder, not a baseline file")),
    Row("baseline-malformed-under-update-all", ("--giacheck-update-all",), files={BASELINE: b"{ not json"},
        words=(BASELINE, "malformed JSON", "line 1 column 3", "never overwritten")),
    Row("baseline-missing-key", files={BASELINE: b'{"psnr": 12.5}'},
        words=(BASELINE, "key 'ssim.mean' is missing", "valid: the recorded SSIM mean")),
    Row("baseline-wrong-type", files={BASELINE: b'{"ssim": {"mean": "high"}}'},
        words=(BASELINE, "key 'ssim.mean' is \"high\" (a string)")),
    Row("baseline-out-of-range", files={BASELINE: b'{"ssim": {"mean": 7}}'}, words=("'ssim.mean' is 7", "[-1, 1]")),
    Row("baseline-array", files={BASELINE: b"[]"}, words=(BASELINE, "holds a JSON array, not an object")),
    Row("baseline-of-another-case", files={BASELINE: b'{"case_id": "other", "ssim": {"mean": 0.2}}'},
        words=("key 'case_id' is \"other\"", f"the baseline of '{CASE}'")),
    Row("baseline-corrupt-neighbour", files={BASELINE: GOOD, "baselines/smoke/test_suite/gone.json": b"{"},
        words=("gone.json", "malformed JSON", "1 recorded baseline(s)")),
    # an update that could not be saved: the claim fails before its case runs
    Row("update-into-a-file", ("--giacheck-update-all",), files={"baselines/smoke/test_suite": b"not a folder"},
        exit=FAILED, failed=1, words=("cannot be written", "baselines/smoke/test_suite is a file, not a folder",
                                      "nothing was run or written")),
    Row("update-under-a-file-root", ("--giacheck-update", "--giacheck-baselines", "b/c"), files={"b": b"x"},
        exit=FAILED, failed=1, words=("cannot be written", "b is a file, not a folder")),
]


def _project(pytester: pytest.Pytester, row: Row) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(GUARD)
    pytester.makefile(".ini", tox=f"[pytest]\n{row.ini}\n")
    for name, data in row.files.items():
        path = pytester.path / name
        if data is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _assert_same(before: dict[Path, bytes | None], root: Path) -> None:
    """Nothing of the project was added, removed or changed (pytest's and pytester's own files aside)."""

    def project(seen: dict[Path, bytes | None]) -> dict[Path, bytes | None]:
        return {p: v for p, v in seen.items() if "__pycache__" not in p.parts
                and not (p != root and p.relative_to(root).parts[0] in ("stdout", "stderr", "runpytest-current"))
                and not (p != root and p.relative_to(root).parts[0].startswith("runpytest-"))}

    after, before = project(snapshot(root)), project(before)
    assert after == before, (f"added {sorted(set(after) - set(before))}, removed {sorted(set(before) - set(after))}, "
                             f"changed {sorted(p for p in set(after) & set(before) if after[p] != before[p])}")


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_hostile_input_is_refused_before_compute(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                 row: Row) -> None:
    _project(pytester, row)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    guard = forbid_compute(monkeypatch)
    before = snapshot(pytester.path)
    result = pytester.runpytest_inprocess(*QUIET, *row.args)
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == row.exit, text
    for word in row.words:
        assert word in text, f"{word!r} not in:\n{text}"
    if row.exit == FAILED:
        result.assert_outcomes(failed=row.failed, passed=1)
    assert "COMPUTE STARTED" not in text and not guard.ran, guard.calls
    assert "INTERNALERROR" not in text
    _assert_same(before, pytester.path)


def test_xdist_worker_fails_a_corrupt_baseline_before_compute(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Under xdist the controller collects nothing: each claim validates its baseline on the worker, before its
    case runs (the worker's conftest guard would name any compute), and the file is not rewritten."""
    row = Row("xdist", files={BASELINE: b'{"ssim": {"mean": NaN}}'})
    _project(pytester, row)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = snapshot(pytester.path)
    result = pytester.runpytest_subprocess("-n", "1", *QUIET,
                                           "--giacheck-update-all")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([f"*corrupt baseline*{BASELINE}: key 'ssim.mean' is NaN*never overwritten*"])
    assert "COMPUTE STARTED" not in result.stdout.str() + result.stderr.str()
    _assert_same(before, pytester.path)


def test_every_option_has_a_check() -> None:
    assert set(_CHECKS) == {opt.name for opt in OPTIONS}


@pytest.mark.parametrize(("name", "value"), [
    ("tolerance", "0"), ("tolerance", "0.06"), ("tolerance", "0.999"), ("gpus", "0,1,7"), ("gpus", "GPU-8f3a-11"),
    ("gpus", "MIG-GPU-1a2b/1/0"), ("device", "cuda:3"), ("threads", "auto"), ("threads", "1024"), ("trials", "0"),
    ("trials", "10000"), ("storage", "sqlite:///tuning.db"), ("storage", "study.journal"), ("attack", "echo"),
    ("attack", "my_pkg.attacks:Better"), ("state", "warm50"), ("state", "bncal"), ("profile", "paper"),
])
def test_valid_values_pass(name: str, value: str) -> None:
    assert _CHECKS[name](value) is None


UNWRITABLE = """
import errno

import giacheck.baselines


def _refuse(payload, path):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


giacheck.baselines.write_json_atomic = _refuse
"""


def test_a_baseline_the_os_refuses_fails_its_test_and_the_session_goes_on(pytester: pytest.Pytester,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The write that follows the case (read-only file system, permissions: what a check before the case cannot
    foresee) fails that test with the path and the OS error; the session ends normally, nothing half-written."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(UNWRITABLE)
    result = pytester.runpytest_subprocess(*QUIET, "--giacheck-update-all")
    assert result.ret == FAILED
    result.assert_outcomes(failed=1, passed=1)
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text
    result.stdout.fnmatch_lines([f"*{CASE}: baseline not written at {BASELINE} (PermissionError: Permission denied)*",
                                 "*baseline not written: *PermissionError*"])
    assert not (pytester.path / "baselines").exists()
    artifacts = pytester.path / "giacheck-artifacts"
    journal = [json.loads(line) for line in (artifacts / "results.jsonl").read_text().splitlines()]
    assert [(r["case_id"], r["outcome"]) for r in journal] == [(CASE, "failed")]
    assert json.loads((artifacts / MANIFEST).read_text())["written"] == {
        "results.json": "pytest", "results.jsonl": "pytest", "smoke": "pytest"}
    pytester.runpytest_subprocess(*QUIET, "--giacheck-update-all", "--co").assert_outcomes()  # its own: accepted
