"""An audit as a CI gate that fails closed, run as users run it (the ``giacheck`` console script in a folder of
their own): interrupted with SIGINT and rerun, it keeps its finished cases and ends with the report an
uninterrupted run writes; a second audit on the same folder is refused while the first runs; a rerun with other
settings is refused, saying what differs; and no subcommand executes a ``torch.py`` in the working directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from giacheck.audit import RESULTS_JSONL, STATE_JSON, _cut_torn_line, _resume
from giacheck.cli import main
from giacheck.errors import GiacheckError
from giacheck.models import registry

GIACHECK = str(Path(sys.executable).with_name("giacheck"))
VENDOR = '''
from torch import nn

from giacheck.models import ModelEntry


def _cnn(resolution, num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def cnn():
    return ModelEntry(name="vendor_cnn", upstream="test", factory=_cnn, default_size=16, num_classes=10,
                      norm_kinds=(), has_batchnorm=False)
'''
# control + two configurations: long enough to be interrupted after the first finished case
AUDIT = ["audit", "--model", "vendor:cnn", "--bn", "eval", "--batch-sizes", "1,2", "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _giacheck(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GIACHECK, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _without_times(markdown: str) -> str:
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated <time>", markdown)


def _cases(out: Path) -> list[dict]:
    """results.json's cases without what differs between two runs of the same audit (wall time)."""
    cases = json.loads((out / "results.json").read_text())["cases"]
    for case in cases:
        case.pop("wall_s")
        case["result"].pop("timings")
    return cases


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "vendor.py").write_text(VENDOR)
    return tmp_path


def test_interrupted_audit_resumes_without_recomputing(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    reference = _giacheck(workdir, *AUDIT, "--out", "uninterrupted")
    assert reference.returncode in (0, 1, 3), reference.stderr

    out = workdir / "interrupted"
    first = subprocess.Popen([GIACHECK, *AUDIT, "--out", str(out)], cwd=workdir, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _lines(out / "results.jsonl") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the audit ended before it could be interrupted"

        # a second audit on the same folder, while the first runs: refused with the holder's pid, nothing touched
        monkeypatch.chdir(workdir)
        monkeypatch.syspath_prepend(str(workdir))
        monkeypatch.delitem(sys.modules, "vendor", raising=False)
        monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
        assert main([*AUDIT, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"another giacheck audit is writing into this folder (pid {first.pid})" in err, err

        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    kept = _lines(out / "results.jsonl")
    assert 1 <= len(kept) < 3, "interrupted after its first case, before its last"
    assert json.loads((out / "audit-state.json").read_text())["finished"] is False
    assert not (out / "results.json").exists() and not (out / "report.html").exists()

    resumed = _giacheck(workdir, *AUDIT, "--out", str(out))
    assert resumed.returncode == reference.returncode, resumed.stderr
    assert f"resumed: {len(kept)} finished case(s) kept" in resumed.stdout
    computed = [line for line in resumed.stderr.splitlines() if re.search(r"\[\d/3\] .*: worst image SSIM", line)]
    assert len(computed) == 3 - len(kept), f"only the unfinished cases ran again: {computed}"
    assert _lines(out / "results.jsonl")[:len(kept)] == kept, "the finished records are kept byte for byte"
    assert _cases(out) == _cases(workdir / "uninterrupted")
    assert _without_times((out / "report.md").read_text()) == _without_times(
        (workdir / "uninterrupted" / "report.md").read_text())
    assert json.loads((out / "audit-state.json").read_text())["finished"] is True

    # a finished audit is replaced by a rerun, and one of other settings is refused only while unfinished
    state = json.loads((out / "audit-state.json").read_text())
    (out / "audit-state.json").write_text(json.dumps({**state, "finished": False}))
    other = _giacheck(workdir, *AUDIT, "--seed", "1", "--out", str(out))
    assert other.returncode == 2
    assert "holds an unfinished audit" in other.stderr and "seed: recorded 0, now 1" in other.stderr
    assert "--fresh" in other.stderr


def test_no_subcommand_executes_torch_py_from_the_working_directory(workdir: Path) -> None:
    """A ``torch.py`` (or ``numpy.py``) in the folder a user runs giacheck in is never imported, even by a command
    that imports their own module from that folder."""
    marker = workdir / "EXECUTED"
    for shadow in ("torch", "numpy", "PIL"):
        target = workdir / (f"{shadow}/__init__.py" if shadow == "PIL" else f"{shadow}.py")
        target.parent.mkdir(exist_ok=True)
        target.write_text(f"open({str(marker)!r}, 'a').write('{shadow}\\n')\nraise SystemExit(99)\n")
    commands = [  # each imports torch (and the runner, the models, the report writer) before it ends
        ["models"],
        ["run", "lenet_sigmoid-16-bn_eval-bs1-stats_none", "--device", "meta"],
        ["audit", "--model", "vendor:cnn", "--batch-sizes", "11", "--out", "audit"],  # imports vendor, then refused
        ["init-pack", "pack", "--model", "vendor:cnn", "--bn", "eval"],
    ]
    for args in commands:
        done = _giacheck(workdir, *args)
        assert not marker.exists(), f"giacheck {' '.join(args)} executed {marker.read_text()!r} from the cwd"
        assert done.returncode in (0, 2), (args, done.stderr)
        if args[0] == "audit":
            assert "batch size 11" in done.stderr, "vendor.py was imported from the working directory"
    assert (workdir / "pack").is_dir(), "init-pack imported vendor.py from the working directory"


def test_a_torn_last_line_is_cut_so_the_next_record_starts_its_own_line(tmp_path: Path) -> None:
    journal = tmp_path / RESULTS_JSONL
    journal.write_bytes(b'{"a": 1}\n{"torn": ')
    _cut_torn_line(journal)
    assert journal.read_bytes() == b'{"a": 1}\n'
    _cut_torn_line(journal)
    assert journal.read_bytes() == b'{"a": 1}\n', "a whole journal is left as it is"


def test_fresh_starts_over_even_when_the_state_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / STATE_JSON).write_text("garbage{")
    (tmp_path / RESULTS_JSONL).write_text("{}\n")
    with pytest.raises(GiacheckError, match="Use --fresh to start over"):
        _resume(tmp_path, {"control": "c", "cases": []}, fresh=False)
    assert (tmp_path / RESULTS_JSONL).is_file(), "refused: nothing removed"
    assert _resume(tmp_path, {"control": "c", "cases": []}, fresh=True) == {}
    assert not (tmp_path / RESULTS_JSONL).exists(), "--fresh discards the unfinished journal"
