"""Tests of giacheck.runner: reproducibility, clear errors before any attack compute, and the Result's fields."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import giacheck.runner
from giacheck import metrics
from giacheck.attack import invert
from giacheck.client import simulate_update
from giacheck.data import BundledImages, select_batch
from giacheck.errors import DatasetError, GiacheckError, InvalidCaseError, InvalidUpdateError, UnknownModelError
from giacheck.models import build
from giacheck.runner import Result, controlled_init, run_case
from giacheck.specs import AttackSpec, Case, ClientSpec, RunOptions

TINY = AttackSpec(iterations=5)
LENET = "lenet_sigmoid-32-bn_eval-bs1-stats_none"


# ------------------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize(("case_id", "iterations"), [
    (LENET, 10),
    ("resnet18_cifar-32-bn_train-bs1-stats_exact", 10),
])
def test_same_seed_same_result_on_cpu(case_id: str, iterations: int) -> None:
    spec = AttackSpec(iterations=iterations)
    a = run_case(case_id, options=RunOptions(seed=3, budget=spec))
    b = run_case(case_id, options=RunOptions(seed=3, budget=spec))
    assert a.ssim == b.ssim
    assert a.psnr == b.psnr
    assert a.curve == b.curve
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(a.original, b.original)


def test_different_seed_different_reconstruction() -> None:
    a = run_case(LENET, options=RunOptions(budget=TINY))
    b = run_case(LENET, options=RunOptions(seed=1, budget=TINY))
    assert torch.equal(a.original, b.original)  # the client's images do not depend on the seed
    assert not torch.allclose(a.reconstruction, b.reconstruction)
    assert a.ssim != b.ssim


# -------------------------------------------------------------------------------------- errors before attack
@pytest.fixture
def no_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a bad input gets as far as the attack."""

    def attack_ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("attack ran")

    monkeypatch.setattr(giacheck.runner, "make_attack", lambda name, spec: attack_ran)


def _write_png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_unknown_model(no_attack: None) -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'resnet18_cifr'.*resnet18_cifar"):
        run_case("resnet18_cifr-32-bn_eval-bs1-stats_none", options=RunOptions(budget=TINY))


@pytest.mark.parametrize("case_id", ["nonsense", "lenet_sigmoid-32-bn_eval-bs1", "lenet_sigmoid-32-bn_sideways-bs1"
                                     "-stats_none", ""])
def test_malformed_case_id(no_attack: None, case_id: str) -> None:
    with pytest.raises(InvalidCaseError) as info:
        run_case(case_id, options=RunOptions(budget=TINY))
    message = str(info.value)
    assert repr(case_id) in message
    assert "malformed case id" in message or "unknown value" in message
    assert "valid" in message or "expected" in message


def test_unknown_axis_value_lists_the_valid_ones(no_attack: None) -> None:
    with pytest.raises(InvalidCaseError, match=r"bn_sideways.*valid: bn_train, bn_eval"):
        run_case("lenet_sigmoid-32-bn_sideways-bs1-stats_none", options=RunOptions(budget=TINY))


def test_batch_larger_than_available_images(no_attack: None, tmp_path) -> None:
    _write_png(tmp_path / "cat" / "a.png", 0)
    _write_png(tmp_path / "dog" / "b.png", 1)
    with pytest.raises(InvalidCaseError) as info:
        run_case("lenet_sigmoid-32-bn_eval-bs3-stats_none",
                 options=RunOptions(data=f"imagefolder:{tmp_path}", budget=TINY))
    message = str(info.value)
    assert "batch size 3" in message and "2 images" in message and "1..2" in message


def test_batch_larger_than_bundled_images(no_attack: None) -> None:
    with pytest.raises(InvalidCaseError, match=r"batch size 13 is larger than the 12 images available in bundled"):
        run_case("lenet_sigmoid-32-bn_eval-bs13-stats_none", options=RunOptions(budget=TINY))


def test_resolution_the_model_cannot_take(no_attack: None) -> None:
    with pytest.raises(InvalidCaseError, match=r"lenet_sigmoid needs an input size >= 8 and a multiple of 4, got 30"):
        run_case("lenet_sigmoid-30-bn_eval-bs1-stats_none", options=RunOptions(budget=TINY))


def test_invalid_threat_for_the_model(no_attack: None) -> None:
    with pytest.raises(InvalidCaseError, match="stats_exact with bn_eval"):
        run_case("resnet18_cifar-32-bn_eval-bs1-stats_exact", options=RunOptions(budget=TINY))


def test_missing_dataset_path(no_attack: None) -> None:
    with pytest.raises(DatasetError, match=r"'/nonexistent' does not exist"):
        run_case(LENET, options=RunOptions(data="imagefolder:/nonexistent", budget=TINY))


def test_unknown_dataset_scheme(no_attack: None) -> None:
    with pytest.raises(DatasetError, match=r"unknown image source scheme 'imagefoldr'.*imagefolder"):
        run_case(LENET, options=RunOptions(data="imagefoldr:/tmp", budget=TINY))


def test_malformed_cifar_batch(no_attack: None, tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"this is not a pickle \x00\xff" * 10)
    for i in range(2, 6):  # the split's other files exist, so the garbage file is what fails
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8),
                                                               b"labels": [0]}))
    with pytest.raises(DatasetError) as info:
        run_case(LENET, options=RunOptions(data=f"cifar10:{tmp_path}", budget=TINY))
    message = str(info.value)
    assert "data_batch_1" in message and "not a valid pickled batch" in message


def test_unknown_profile(no_attack: None) -> None:
    with pytest.raises(InvalidCaseError, match="unknown profile 'smok'; valid: smoke, paper"):
        run_case(LENET, profile="smok")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_requested_without_cuda(no_attack: None) -> None:
    with pytest.raises(GiacheckError, match="CUDA is not available"):
        run_case(LENET, device="cuda", options=RunOptions(budget=TINY))


def test_nan_update_is_rejected_naming_the_tensor() -> None:
    source = BundledImages(10)
    batch = select_batch(source, batch_size=1, size=32)
    model = build("lenet_sigmoid", 32)
    update = simulate_update(model, batch.images, batch.labels, ClientSpec(bn_mode="eval"))
    bad = dict(update.tensors)
    bad["net.fc.bias"] = bad["net.fc.bias"].clone()
    bad["net.fc.bias"][3] = float("nan")
    poisoned = type(update)(**{**{f: getattr(update, f) for f in update.__dataclass_fields__}, "tensors": bad})
    with pytest.raises(InvalidUpdateError, match=r"'net\.fc\.bias' contains NaN or Inf"):
        invert(model, poisoned, labels=batch.labels, spec=TINY)
    bad["net.fc.bias"][3] = float("inf")
    with pytest.raises(InvalidUpdateError, match=r"'net\.fc\.bias'"):
        invert(model, poisoned, labels=batch.labels, spec=TINY)


# ---------------------------------------------------------------------------------------------- result fields
@pytest.fixture(scope="module")
def lenet_result() -> Result:
    return run_case(LENET, options=RunOptions(seed=2, budget=AttackSpec(iterations=5, restarts=2)))


def test_to_dict_is_strict_json(lenet_result: Result) -> None:
    payload = lenet_result.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["ssim"] == payload["ssim"]


def test_to_dict_scores(lenet_result: Result) -> None:
    d = lenet_result.to_dict()
    assert d["case_id"] == LENET and d["seed"] == 2 and d["profile"] == "smoke"
    assert d["ssim"]["per_image"] == list(lenet_result.ssim)
    assert len(d["ssim"]["per_image"]) == 1
    assert d["ssim"]["mean"] == pytest.approx(np.mean(d["ssim"]["per_image"]))
    assert d["ssim"]["max"] == max(d["ssim"]["per_image"])
    assert -1.0 <= d["ssim"]["mean"] <= 1.0
    assert len(d["psnr"]["per_image"]) == 1 and math.isfinite(d["psnr"]["mean"])
    secondary = d["secondary"]["patch_matched_ssim"]
    assert len(secondary["per_image"]) == 1 and "secondary" in secondary["note"]
    assert d["iterations"] == 5 and d["restarts"] == 2 and len(d["curve"]) == 5
    assert d["objective"] == pytest.approx(d["curve"][-1], rel=0.5)  # final objective, same scale as the curve


def test_selection_is_by_objective_and_oracle_is_labelled(lenet_result: Result) -> None:
    d = lenet_result.to_dict()
    assert d["selection"] == "objective"
    oracle = d["oracle"]
    assert oracle["selection"] == "oracle"
    assert oracle["restart"] in (0, 1) and oracle["selected_restart"] in (0, 1)
    assert oracle["ssim_mean"] >= d["ssim"]["mean"] - 1e-12  # an upper bound over restarts
    assert "upper bound" in oracle["note"]


def test_manifest(lenet_result: Result) -> None:
    manifest = lenet_result.to_dict()["manifest"]
    assert torch.__version__.startswith(manifest["versions"]["torch"])  # distribution version, no local tag
    assert set(manifest["versions"]) >= {"python", "torch", "timm", "scikit-image", "numpy", "giacheck"}
    assert manifest["versions"]["python"]
    assert manifest["seed"] == 2
    assert manifest["metric"] == metrics.metric_definition()
    assert manifest["metric"]["ssim"]["data_range"] == 1.0
    assert manifest["images"] == ["astronaut"] or manifest["images"] == ("astronaut",)
    assert manifest["data"] == "bundled"
    assert manifest["device"] == "cpu"


def test_result_tensors(lenet_result: Result) -> None:
    assert lenet_result.original.shape == lenet_result.reconstruction.shape == (1, 3, 32, 32)
    assert lenet_result.reconstruction.min() >= 0 and lenet_result.reconstruction.max() <= 1
    recomputed = metrics.match_and_score(lenet_result.reconstruction, lenet_result.original)
    assert recomputed.ssim == pytest.approx(lenet_result.ssim)


def test_reconstruction_is_reordered_to_match_originals() -> None:
    result = run_case("lenet_sigmoid-32-bn_eval-bs3-stats_none", options=RunOptions(budget=TINY))
    scores = metrics.match_and_score(result.reconstruction, result.original)
    assert scores.perm == (0, 1, 2)
    assert scores.ssim == pytest.approx(result.ssim)


def test_stats_proxy_records_candidates_and_never_uses_client_images() -> None:
    result = run_case("resnet18_cifar-32-bn_train-bs2-stats_proxy", options=RunOptions(budget=TINY))
    proxy = result.threat.proxy
    assert proxy.candidates == 4
    assert len(proxy.grad_distances) == 4
    assert 0 <= proxy.chosen < 4
    assert proxy.chosen == int(np.argmin(proxy.grad_distances))  # chosen by alignment, not by SSIM
    client = set(result.manifest.images)
    assert len(client) == 2
    assert len(proxy.pool) == 8 and not client & set(proxy.pool)
    json.dumps(result.to_dict(), allow_nan=False)


def test_stats_proxy_needs_enough_auxiliary_images(no_attack: None, tmp_path) -> None:
    for i, cls in enumerate(("a", "b", "c")):
        _write_png(tmp_path / cls / "x.png", i)
    with pytest.raises(GiacheckError, match="stats_proxy needs at least 2 auxiliary images"):
        run_case("resnet18_cifar-32-bn_train-bs2-stats_proxy",
                 options=RunOptions(data=f"imagefolder:{tmp_path}", budget=TINY))


def test_lab_inferred_records_label_accuracy() -> None:
    result = run_case("resnet18_cifar-32-bn_eval-bs1-stats_none-lab_inferred", options=RunOptions(budget=TINY))
    assert result.threat.labels == "inferred"
    assert result.threat.label_accuracy == 1.0
    assert result.threat.inferred_labels == [0]  # astronaut is label 0 of the bundled source


def test_known_labels_record_no_accuracy(lenet_result: Result) -> None:
    assert lenet_result.threat.to_dict() == {"stats": "none", "labels": "known", "hyper": "known"}


@pytest.mark.parametrize(("p", "low", "high"), [(0.0, 1.0 - 1e-9, 1.0 + 1e-9), (1.0, -1.0, 0.2)])
def test_controlled_init_ssim(p: float, low: float, high: float) -> None:
    case = Case.parse(LENET).with_(init_p=p)
    result = run_case(case, options=RunOptions(budget=AttackSpec(iterations=1)))
    assert result.case_id.endswith(f"-init_p{p:g}")
    assert low <= result.threat.init_ssim <= high


def test_controlled_init_replaces_whole_pixels() -> None:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    init = controlled_init(images, 0.5, restarts=3, seed=0)
    assert init.shape == (3, 2, 3, 16, 16)
    same = (init == images.unsqueeze(0))
    kept = same.all(dim=2)  # pixel kept in every channel ...
    replaced = (~same).all(dim=2)  # ... or replaced in every channel
    assert bool((kept | replaced).all())
    assert 0.35 < float(replaced.float().mean()) < 0.65
    assert not torch.equal(init[0], init[1])  # restarts start from different noise
    assert torch.equal(init, controlled_init(images, 0.5, restarts=3, seed=0))


def test_detection_case_runs_end_to_end_with_box_targets() -> None:
    """YOLO cases take annotated bundled images and their boxes as the known labels."""
    result = run_case("yolov8n-64-bn_train-bs1-stats_none",
                      options=RunOptions(budget=AttackSpec(iterations=2, restarts=2)))
    assert result.manifest.images == ("bus",)
    assert 0.0 <= result.ssim_mean <= 1.0
    assert result.attack.batched is False  # the detection loss couples the batch: restarts are not stacked


def test_train_mode_batchnorm_with_one_value_per_channel_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unadapted ImageNet stem at 32×32 leaves a 1×1 last stage: train-mode BN at bs1 cannot normalize."""
    monkeypatch.setattr(giacheck.runner, "simulate_update", _must_not_run)
    with pytest.raises(InvalidCaseError, match=r"sees one value per channel .*valid: bn_eval"):
        run_case("resnet18_lowres_unadapted-32-bn_train-bs1-stats_none",
                 options=RunOptions(budget=AttackSpec(iterations=1)))


def _must_not_run(*args, **kwargs):
    raise AssertionError("the client ran")


def test_result_state_round_trips_through_a_weights_only_load(tmp_path) -> None:
    """What xdist workers share (giacheck.sharedcache): plain values and tensors, loadable without pickles."""
    result = run_case("lenet_sigmoid-32-bn_eval-bs2-stats_none-init_p0.5", options=RunOptions(budget=TINY))
    path = tmp_path / "state.pt"
    torch.save(result.to_state(), path)
    back = Result.from_state(torch.load(path, weights_only=True))
    assert json.dumps(back.to_dict()) == json.dumps(result.to_dict())  # what reports and baselines get
    assert back.selection is result.selection and back.ssim == result.ssim
    for part in ("attack", "oracle", "threat", "timings", "manifest"):  # typed parts come back typed and equal
        assert getattr(back, part) == getattr(result, part), part
    assert torch.equal(back.original, result.original) and torch.equal(back.reconstruction, result.reconstruction)


def test_run_trials_groups_only_trials_with_the_same_budget() -> None:
    """Trials with different budgets never share one attack call: each result runs (and records) its own."""
    from giacheck.runner import run_trials

    options = [RunOptions(budget=AttackSpec(iterations=2)), RunOptions(budget=AttackSpec(iterations=3))]
    results = run_trials("lenet_sigmoid-32-bn_eval-bs1-stats_none", options=options)
    assert [r.iterations for r in results] == [2, 3]
    assert [len(r.curve) for r in results] == [2, 3]
    assert [r.attack.spec.iterations for r in results] == [2, 3]


def test_run_trials_stacks_a_challenge_set_and_keeps_its_order() -> None:
    from giacheck.runner import run_trials

    options = [RunOptions(image=name, budget=AttackSpec(iterations=2)) for name in ("zidane", "rocket")]
    results = run_trials("lenet_sigmoid-32-bn_eval-bs1-stats_none", options=options)
    assert [r.reid.image for r in results] == ["zidane", "rocket"]
    assert all(r.attack.batched for r in results)
    single = run_case("lenet_sigmoid-32-bn_eval-bs1-stats_none", options=options[1])
    assert not single.attack.batched
    torch.testing.assert_close(single.original, results[1].original)


def test_a_defended_case_reports_utility_beside_leakage() -> None:
    """Utility compares the defended update with the undefended one of the same client: pruning keeps the
    direction partly, DP-SGD's noise at multiplier 1 all but destroys it; an undefended case has none."""
    assert run_case(LENET, options=RunOptions(budget=TINY)).utility is None
    pruned = run_case(f"{LENET}-def_prune0.9", options=RunOptions(budget=TINY)).utility
    noised = run_case(f"{LENET}-def_dpsgd1", options=RunOptions(budget=TINY)).utility
    assert 0.3 < pruned["cosine"] < 1 and abs(noised["cosine"]) < 0.1
    assert pruned["reference_descent"] > 0 and 0 < pruned["relative_descent"] < 1.5
    assert set(pruned["images"]).isdisjoint({"astronaut", "chelsea", "coffee"})  # the calibration images
