"""Hostile input to the ``giacheck`` command line, one row each: the exit status (2 bad input, 4 internal error,
never 0 or 1 when nothing ran), the message (what was wrong, what is valid), no compute before a refusal, and
every file that was there before byte-identical. Model code that exits or fails is the vendor's: bad input
naming its module, never an exit status of its own."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _hostile import assert_unchanged, forbid_compute, snapshot

from giacheck.cli import main
from giacheck.models import registry

CASE = "lenet_sigmoid-16-bn_eval-bs1-stats_none"

# A vendor's module with one builder per way of failing; `exits_on_import` exits as soon as it is imported.
VENDOR = '''
import sys

from torch import nn

from giacheck.models import ModelEntry


def _cnn(resolution, num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


def _entry(factory):
    return ModelEntry(name="vendor_cnn", upstream="test", factory=factory, default_size=16, num_classes=10,
                      norm_kinds=(), has_batchnorm=False)


def exits():
    sys.exit(0)


def exits_later():
    return _entry(lambda resolution, num_classes: sys.exit(0))


def raises():
    raise RuntimeError("weights server unreachable")


def not_a_module():
    return _entry(lambda resolution, num_classes: "a string")


def no_parameters():
    return _entry(lambda resolution, num_classes: nn.Sequential(nn.Flatten()))


class _BadForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        raise ValueError("shapes do not line up")


def bad_forward():
    return _entry(lambda resolution, num_classes: _BadForward())


def fine():
    return _entry(_cnn)
'''


@dataclass(frozen=True)
class Row:
    id: str
    argv: tuple[str, ...]  # {tmp} is the test's folder, {file} a user's file in it
    code: int
    words: tuple[str, ...]  # all in standard error

    def args(self, tmp: Path) -> list[str]:
        return [a.format(tmp=tmp, file=tmp / "user" / "notes.txt") for a in self.argv]


AUDIT = ("audit", "--out", "{tmp}/out", "--model")
ROWS = [
    # run
    Row("run-malformed-case", ("run", "resnet18_cifar-32-bn_sideways"), 2, ("resnet18_cifar-32-bn_sideways",)),
    Row("run-seed-negative", ("run", CASE, "--seed", "-1"), 2, ("--seed", "-1 is out of range", "from 0 to")),
    Row("run-seed-beyond-int64", ("run", CASE, "--seed", str(2**64)), 2, ("--seed", "out of range",
                                                                          str(2**63 - 1))),
    Row("run-model-seed-not-a-number", ("run", CASE, "--model-seed", "abc"), 2, ("'abc' is not a whole number",)),
    Row("run-device-meta", ("run", CASE, "--device", "meta"), 2, ("not on 'meta'", "valid: 'cpu', 'cuda'")),
    Row("run-device-cuda-7", ("run", CASE, "--device", "cuda:7"), 2, ("cuda:7", "use --device cpu")),
    Row("run-device-unknown", ("run", CASE, "--device", "tpu9"), 2, ("unknown device 'tpu9'", "valid:")),
    Row("run-out-is-a-file", ("run", CASE, "--out", "{file}"), 2, ("is a file, not a folder", "nothing was run")),
    Row("run-out-under-a-file", ("run", CASE, "--out", "{file}/sub"), 2, ("is a file, so no folder can be made",)),
    Row("run-out-under-proc", ("run", CASE, "--out", "/proc/giacheck-out"), 2, ("/proc", "cannot hold new files")),
    Row("run-iterations-zero", ("run", CASE, "--iterations", "0"), 2, ("--iterations: 0 is out of range", ">= 1")),
    Row("run-restarts-text", ("run", CASE, "--restarts", "many"), 2, ("'many' is not a whole number",)),
    Row("run-weights-missing", ("run", CASE, "--weights", "{tmp}/nope.safetensors"), 2, ("nope.safetensors",)),
    # audit: the vendor's model code
    Row("audit-module-exits-on-import", (*AUDIT, "exits_on_import:fine"), 2,
        ("exits_on_import", "called sys.exit(0)", "nothing was run")),
    Row("audit-factory-exits", (*AUDIT, "vendor:exits"), 2, ("vendor:exits", "called sys.exit(0)")),
    Row("audit-builder-exits", (*AUDIT, "vendor:exits_later"), 2, ("vendor:exits_later", "called sys.exit(0)")),
    Row("audit-factory-raises", (*AUDIT, "vendor:raises"), 2, ("weights server unreachable",)),
    Row("audit-builder-returns-a-string", (*AUDIT, "vendor:not_a_module"), 2,
        ("returned str", "expected a torch.nn.Module")),
    Row("audit-model-without-parameters", (*AUDIT, "vendor:no_parameters"), 2,
        ("no parameters", "nothing to attack")),
    Row("audit-forward-fails", (*AUDIT, "vendor:bad_forward"), 2,
        ("forward pass on one blank 16x16 image", "ValueError: shapes do not line up")),
    Row("audit-module-missing", (*AUDIT, "no_such_vendor:fine"), 2, ("cannot import module 'no_such_vendor'",)),
    # audit: options and the output folder
    Row("audit-seed-beyond-int64", (*AUDIT, "vendor:fine", "--seed", str(2**63)), 2, ("--seed", "out of range")),
    Row("audit-device-meta", (*AUDIT, "vendor:fine", "--device", "meta"), 2, ("not on 'meta'",)),
    Row("audit-input-size-zero", (*AUDIT, "vendor:fine", "--input-size", "0"), 2, ("--input-size: 0 is out of range",)),
    Row("audit-out-under-a-file", ("audit", "--out", "{file}/audit", "--model", "vendor:fine"), 2,
        ("is a file, so no folder can be made",)),
    Row("audit-out-under-proc", ("audit", "--out", "/proc/giacheck-audit", "--model", "vendor:fine"), 2,
        ("/proc", "cannot hold new files")),
    Row("audit-out-is-the-users-folder", ("audit", "--out", "{tmp}/user", "--model", "vendor:fine"), 2,
        ("notes.txt", "did not write", "Choose a new or empty folder")),
    # init-pack
    Row("init-pack-under-a-file", ("init-pack", "{file}/pack", "--model", "vendor:fine"), 2,
        ("is a file, so no folder can be made",)),
    Row("init-pack-module-exits", ("init-pack", "{tmp}/pack", "--model", "vendor:exits"), 2,
        ("called sys.exit(0)",)),
    Row("init-pack-under-proc", ("init-pack", "/proc/giacheck-pack", "--model", "vendor:fine"), 2,
        ("cannot hold new files",)),
    # bench, signal, challenge
    Row("bench-repeats-zero", ("bench", "--repeats", "0"), 2, ("--repeats: 0 is out of range", ">= 1")),
    Row("bench-steps-zero", ("bench", "--steps", "0"), 2, ("--steps: 0 is out of range",)),
    Row("bench-device-cuda-7", ("bench", "--device", "cuda:7"), 2, ("cuda:7", "use --device cpu")),
    Row("bench-unknown-kernel-model", ("bench", "--kernels", "resnet19"), 2, ("unknown model 'resnet19'",)),
    Row("signal-malformed-case", ("signal", "lenet_sigmoid-16-bn_eval"), 2, ("lenet_sigmoid-16-bn_eval",)),
    Row("signal-device-meta", ("signal", CASE, "--device", "meta"), 2, ("not on 'meta'",)),
    Row("challenge-iterations-zero", ("challenge", CASE, "astronaut", "--iterations", "0"), 2,
        ("--iterations: 0 is out of range",)),
    # report
    Row("report-missing-results", ("report", "{tmp}/none.json", "--out", "{tmp}/report"), 2, ("none.json",)),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory a user runs giacheck in: their vendor module and a folder of their own files."""
    (tmp_path / "vendor.py").write_text(VENDOR)
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("do not lose me\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "user"))  # restores sys.path, so the cwd giacheck appends goes too
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in the snapshot
    for name in ("vendor", "exits_on_import"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    return tmp_path


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_hostile_command_line(row: Row, workdir: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    guard = forbid_compute(monkeypatch)
    before = snapshot(workdir)
    code = main(row.args(workdir))
    err = capsys.readouterr().err
    assert code == row.code, err
    for words in row.words:
        assert words in err, f"{words!r} not in {err!r}"
    assert not guard.ran, guard.calls
    assert_unchanged(before, workdir)


def test_hostile_rows_cover_every_command() -> None:
    commands = {row.argv[0] for row in ROWS}
    assert commands >= {"run", "audit", "init-pack", "bench", "signal", "challenge", "report"}
    assert len(ROWS) >= 35


def test_code_that_exits_mid_run_is_an_internal_error_not_a_verdict(workdir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A forward pass that exits only when gradients are taken passes the checks (one forward without
    gradients), then exits in the middle of the run, after the control: exit 4 naming what happened, never 0
    ("no configuration leaks")."""
    (workdir / "gradexit.py").write_text(VENDOR + '''
import torch


class _ExitsUnderGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _cnn(16, 10)

    def forward(self, x):
        if torch.is_grad_enabled() and x.device.type != "meta":  # not while its memory is measured
            sys.exit(0)
        return self.net(x)


def exits_under_grad():
    return _entry(lambda resolution, num_classes: _ExitsUnderGrad())
''')
    out = workdir / "out"
    code = main(["audit", "--out", str(out), "--model", "gradexit:exits_under_grad", "--bn", "eval",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "internal error" in err and "sys.exit(0)" in err and "concluded nothing" in err, err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1, "the control's finished record is kept"
