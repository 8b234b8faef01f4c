"""Hostile models, weights files and memory: each row is refused with exit code 2 (or a typed error) before any
compute, its message says what was wrong and what is valid, and every file the user had is left byte-identical."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from _hostile import ComputeStarted, assert_unchanged, forbid_compute, snapshot

import giacheck.client
import giacheck.runner
from giacheck import memory
from giacheck.cli import main
from giacheck.errors import InvalidCaseError, WeightsError
from giacheck.memory import AvailableMemory
from giacheck.models import build, get_entry
from giacheck.models.weights import check_weights_file, load_weights, read_state_dict
from giacheck.specs import Case, ClientSpec, ModelSpec
from giacheck.tasks import get_task
from giacheck.validation import check_case, validate

LENET = "lenet_sigmoid-32-bn_eval-bs1-stats_none"
GIB = 1 << 30


class RunsCommand:
    """Unpickling this calls ``os.system``: a malicious ``torch.save`` file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


@dataclass(frozen=True, slots=True)
class Row:
    """One hostile input: ``make`` writes it under the row's folder and returns the call that must refuse it."""

    id: str
    make: Callable[[Path, pytest.MonkeyPatch], Callable[[], Any]]
    expect: type[Exception] | int  # the exception, or the CLI's exit code
    words: tuple[str, ...]  # what was wrong and what is valid
    reads_weights: bool = False  # refused while the model state is prepared (where the weights file is read)
    absent: tuple[str, ...] = ()  # files that must not exist afterwards (a payload must not have run)


# ------------------------------------------------------------------------------------------------------ inputs
def _lenet_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build("lenet_sigmoid", 32, seed=0).net.state_dict().items()}


def _safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file(state, str(path))
    return path


def _run(weights: Path, out: Path, case_id: str = LENET) -> Callable[[], int]:
    return lambda: main(["run", case_id, "--weights", str(weights), "--out", str(out)])


def _cli_folder(root: Path) -> Path:
    """An --out folder holding a result of the user's, which a refused run must leave as it is."""
    out = root / "out"
    out.mkdir()
    (out / "earlier.json").write_text('{"kept": true}\n')
    return out


def _weights_dir(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], int]:
    folder = root / "weights"
    folder.mkdir()
    _safetensors(folder / "lenet.safetensors", _lenet_state())
    return _run(folder, _cli_folder(root))


def _empty(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], int]:
    path = root / "empty.pt"
    path.write_bytes(b"")
    return _run(path, _cli_folder(root))


def _weights_dir_library(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    folder = root / "weights"
    folder.mkdir()
    return lambda: read_state_dict(folder)


def _missing(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    return lambda: load_weights(build("lenet_sigmoid", 32).net, root / "absent.safetensors")


def _symlink_loop(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    a, b = root / "a.safetensors", root / "b.safetensors"
    a.symlink_to(b)
    b.symlink_to(a)
    return lambda: check_weights_file(a)


def _truncated_safetensors(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    whole = _safetensors(root / "whole.safetensors", _lenet_state()).read_bytes()
    path = root / "truncated.safetensors"
    path.write_bytes(whole[: len(whole) // 2])
    return lambda: read_state_dict(path)


def _huge_header(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    path = root / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")  # a header length of an exbibyte
    return lambda: check_weights_file(path)


def _not_a_pickle(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], int]:
    path = root / "notes.pt"
    path.write_bytes(b"these are not weights\n" * 8)
    return _run(path, _cli_folder(root))


def _foreign_pickle(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    path = root / "plain.pkl"
    path.write_bytes(pickle.dumps({"fc.weight": [1.0, 2.0]}, protocol=4))  # pickle's own format, not torch.save
    return lambda: read_state_dict(path)


def _os_system(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], int]:
    path = root / "evil.pt"
    torch.save({"fc.weight": RunsCommand(f"touch {root / 'pwned'}")}, path)
    return _run(path, _cli_folder(root))


def _os_system_trusted(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    path = root / "evil.pt"
    torch.save({"fc.weight": RunsCommand(f"touch {root / 'pwned'}")}, path)
    return lambda: read_state_dict(path, trust_pickle=True)  # trust does not extend to a blocked module


def _object_pickle(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    path = root / "namespace.pt"
    torch.save({"state_dict": _lenet_state(), "args": argparse.Namespace(lr=0.1)}, path)
    return lambda: read_state_dict(path)


def _nan_weights_cli(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], int]:
    state = _lenet_state()
    state["fc.weight"][0, :3] = float("nan")
    return _run(_safetensors(root / "nan.safetensors", state), _cli_folder(root))


def _inf_weights(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    state = _lenet_state()
    state["body.0.bias"][1] = float("inf")
    path = root / "inf.pt"
    torch.save(state, path)
    target = build("lenet_sigmoid", 32, seed=1).net
    return lambda: load_weights(target, path)


def _client_on(model: torch.nn.Module, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    """The client's update on ``model``; the client's training must not start."""
    def train(*args: Any, **kwargs: Any) -> None:
        raise ComputeStarted("the client trained a model whose own weights are not finite")

    mp.setattr(giacheck.client, "local_training", train)
    images, labels = torch.rand(1, 3, 32, 32), torch.tensor([3])
    return lambda: giacheck.client.simulate_update(model, images, labels, ClientSpec(bn_mode="eval", batch_size=1))


def _nan_parameter(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    model = build("lenet_sigmoid", 32, seed=0)
    with torch.no_grad():
        model.net.fc.weight[0, 0] = float("nan")  # as a factory with a bad initializer makes it
    return _client_on(model, mp)


def _nan_buffer(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    model = build("resnet18_cifar", 32, seed=0)
    model.net.bn1.running_var[0] = float("nan")
    return _client_on(model, mp)


def _budget(mp: pytest.MonkeyPatch, host: float, cuda: float | None = None) -> None:
    """The machine has ``host`` GiB available (and ``cuda`` GiB free on cuda:0)."""
    def available(device: Any = "cpu") -> AvailableMemory | None:
        if torch.device(device).type == "cpu":
            return AvailableMemory(bytes=int(host * GIB), device="cpu", source="psutil")
        return None if cuda is None else AvailableMemory(bytes=int(cuda * GIB), device="cuda:0",
                                                         source="torch.cuda.mem_get_info")

    mp.setattr(memory, "available_memory", available)


def _resolution_100000(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], int]:
    _budget(mp, host=24)
    out = _cli_folder(root)
    return lambda: main(["run", "resnet18_cifar-100000-bn_eval-bs1-stats_none", "--out", str(out)])


def _batch_too_large(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    _budget(mp, host=4)
    return lambda: check_case(Case.parse("resnet18-224-bn_eval-bs64-stats_none"))


def _restarts_on_cuda(root: Path, mp: pytest.MonkeyPatch) -> Callable[[], Any]:
    _budget(mp, host=64, cuda=8)
    return lambda: check_case(Case.parse("vit_b16-224-bn_eval-bs1-stats_none"), device="cuda:0", restarts=8)


ROWS = [
    Row("weights-folder", _weights_dir, 2, ("weights", "is a folder", "safetensors", "torch.save"),
        reads_weights=True),
    Row("weights-folder-library", _weights_dir_library, WeightsError,
        ("is a folder, not a file", "one .safetensors or torch.save file")),
    Row("weights-empty-file", _empty, 2, ("empty.pt", "is empty (0 bytes)", "Valid: a .safetensors file",
                                          "torch.save(model.state_dict(), PATH)"), reads_weights=True),
    Row("weights-missing", _missing, WeightsError, ("absent.safetensors", "does not exist", "local path")),
    Row("weights-symlink-loop", _symlink_loop, WeightsError, ("symbolic link that loops or points to nothing",
                                                              "the weights file itself")),
    Row("weights-truncated-safetensors", _truncated_safetensors, WeightsError,
        ("truncated.safetensors", "cannot read safetensors file", "truncated", "Valid: a complete file")),
    Row("weights-huge-safetensors-header", _huge_header, WeightsError,
        ("huge.safetensors", "header too large", "Valid: a complete file")),
    Row("weights-not-a-pickle", _not_a_pickle, 2, ("notes.pt", "cannot read weights file", "not a weights file",
                                                   "Valid: a .safetensors file"), reads_weights=True),
    Row("weights-foreign-pickle-opcode", _foreign_pickle, WeightsError,
        ("plain.pkl", "cannot parse", "Unsupported operand", "Valid: a .safetensors file", "torch.save")),
    Row("weights-calls-os-system", _os_system, 2,
        ("evil.pt", "is refused", "calls the global posix.system", "not allowed", "not safe to load",
         "Valid: a .safetensors file", "state dict of tensors saved with torch.save"),
        reads_weights=True, absent=("pwned",)),
    Row("weights-calls-os-system-trusted", _os_system_trusted, WeightsError,
        ("calls the global posix.system", "not safe to load, with or without trust_pickle", "Valid:"),
        absent=("pwned",)),
    Row("weights-pickled-object", _object_pickle, WeightsError,
        ("calls the global argparse.Namespace", "not allowed", "not safe to load", "Valid: a .safetensors file",
         "trust_pickle=True")),
    Row("weights-nan-tensor", _nan_weights_cli, 2, ("nan.safetensors", "non-finite", "fc.weight (3 NaN, 0 Inf)",
                                                    "Valid: a weights file whose every tensor is finite"),
        reads_weights=True),
    Row("weights-inf-tensor", _inf_weights, WeightsError, ("inf.pt", "body.0.bias (0 NaN, 1 Inf)", "finite")),
    Row("model-nan-parameter", _nan_parameter, WeightsError,
        ("global model's own weights are non-finite", "net.fc.weight (1 NaN, 0 Inf)", "not from the client's "
         "learning rate", "Valid: a global model whose every parameter and buffer is finite")),
    Row("model-nan-batchnorm-buffer", _nan_buffer, WeightsError,
        ("global model's own weights are non-finite", "net.bn1.running_var (1 NaN, 0 Inf)", "finite")),
    Row("memory-resolution-100000", _resolution_100000, 2,
        ("resnet18_cifar-100000-bn_eval-bs1-stats_none", "memory: at least", "100000x100000",
         "24.0 GiB of host memory available (psutil)", "valid: an input size <= ", "GIACHECK_SKIP_MEMORY_CHECK=1")),
    Row("memory-batch-too-large", _batch_too_large, InvalidCaseError,
        ("resnet18-224-bn_eval-bs64-stats_none", "memory: an estimated", "batch size 64", "measured on the meta "
         "device", "4.0 GiB of host memory available", "valid: batch size <= ")),
    Row("memory-batched-restarts-on-cuda", _restarts_on_cuda, InvalidCaseError,
        ("vit_b16-224", "x 8 stacked attacks", "8.0 GiB of free memory on cuda:0 available "
         "(torch.cuda.mem_get_info)", "valid: attacks run one after another")),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the foreign pickle
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_hostile_model_input_is_refused(row: Row, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    call = row.make(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    prepare_state = giacheck.runner.prepare_state
    guard = forbid_compute(monkeypatch)
    if row.reads_weights:  # the weights file is read as the model state is prepared; the client must not start
        monkeypatch.setattr(giacheck.runner, "prepare_state", prepare_state)
    capsys.readouterr()
    if isinstance(row.expect, int):
        assert call() == row.expect
        message = capsys.readouterr().err
    else:
        with pytest.raises(row.expect) as info:
            call()
        message = str(info.value)
    for word in row.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert not guard.ran, guard.calls
    for name in row.absent:
        assert not (tmp_path / name).exists(), f"{name} exists: the file's payload ran"
    assert_unchanged(before, tmp_path)


# ------------------------------------------------------------------------------------------------ not refused
# every model and resolution the suites run (suites/*.py), with the largest batch size they use there
SUITE_MODELS = [
    ("convnext_t", 224, 1), ("maxvit_t", 224, 1), ("swin_t", 224, 2), ("swinv2_t", 256, 1), ("vit_b16", 224, 1),
    ("resnet18", 224, 1), ("yolov8n", 256, 1), ("yolov8n_preact", 256, 1), ("resnet18_cifar", 32, 1),
    ("swin_t_cifar", 32, 2), ("maxvit_t_cifar", 32, 1), ("convnext_t_lowres_unadapted", 32, 1),
]


@pytest.mark.parametrize(("model", "resolution", "suite_bs"), SUITE_MODELS)
def test_the_suites_cases_fit_a_24_gib_machine(model: str, resolution: int, suite_bs: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With 22 GiB free (a 24 GiB machine) the memory check passes every case the suites run: at batch size 8 with
    one restart at a time, and on a GPU at the suites' batch size with the paper profile's 8 stacked restarts."""
    _budget(monkeypatch, host=22, cuda=22)
    case = Case.parse(f"{model}-{resolution}-bn_eval-bs8-stats_none")
    assert validate(case, device="cpu") == []
    assert validate(case, device="cuda:0") == []
    paper = case.with_(client=ClientSpec(bn_mode="eval", batch_size=suite_bs))
    restarts = 8 if get_task(get_entry(model).task).batchable_trials else 1  # else they run one by one
    assert validate(paper, device="cuda:0", restarts=restarts) == []


def test_the_largest_input_size_named_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    _budget(monkeypatch, host=24)
    case = Case.parse("resnet18_cifar-100000-bn_eval-bs1-stats_none")
    [problem] = validate(case)
    largest = int(re.search(r"an input size <= (\d+) at batch size 1", problem).group(1))
    assert 200 < largest < 100000
    assert validate(case.with_(model=ModelSpec(name="resnet18_cifar", resolution=largest))) == []
    assert validate(case.with_(model=ModelSpec(name="resnet18_cifar", resolution=2 * largest))) != []


def test_memory_check_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    _budget(monkeypatch, host=1)
    case = Case.parse("resnet18_cifar-100000-bn_eval-bs1-stats_none")
    assert any("memory:" in p for p in validate(case))
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    assert validate(case) == []


def test_with_no_device_named_a_case_may_fit_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too big for the host but not for the free CUDA memory: valid when no device is named, refused on the CPU."""
    _budget(monkeypatch, host=6, cuda=40)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    case = Case.parse("vit_b16-224-bn_eval-bs8-stats_none")
    assert validate(case) == []
    [problem] = validate(case, device="cpu")
    assert "6.0 GiB of host memory available" in problem and "valid: batch size <= 2 at 224x224" in problem
    smaller = [case.with_(client=ClientSpec(bn_mode="eval", batch_size=bs)) for bs in (2, 3)]
    assert [len(validate(c, device="cpu")) for c in smaller] == [0, 1]  # what "valid" names fits; one more not


def test_estimate_builds_nothing_real_and_leaves_the_random_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    estimate = memory.estimate_memory(get_entry("resnet18_cifar"), 4096, batch_size=2, restarts=3)
    assert torch.equal(torch.rand(3), expected)
    assert estimate.activation_bytes > 4096 * 4096 * 3 * 4 * 100  # 64 channels at full resolution, and more
    assert estimate.device_bytes > 2 * 3 * memory.PER_IMAGE_ACTIVATIONS * estimate.activation_bytes


def test_available_host_memory_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)  # import psutil raises ImportError
    found = memory.available_memory("cpu")
    if Path("/proc/meminfo").exists():
        assert found is not None and found.source == "/proc/meminfo MemTotal" and found.bytes > 0
    else:
        assert found is None or found.source == "os.sysconf"
