"""Tests of the model zoo (timm_zoo, yolo, weights): every registered model builds offline, runs at its default size,
and gives one attack iteration a finite, non-zero gradient on the input; bad inputs raise clear GiacheckErrors.

Every entry runs at its *default* size, canonical ones included (224/256 px): at batch 1 with one thread the whole
registry takes about a minute on this workplace's CPU, so no entry needs a reduced size.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from giacheck.attack.objective import Replica
from giacheck.client import simulate_update
from giacheck.data import to_tensor_resized
from giacheck.errors import DatasetError, GiacheckError, InvalidCaseError, UnknownModelError, WeightsError
from giacheck.models import NormalizedModel, build, get_entry, list_models
from giacheck.models.timm_zoo import CIFAR10_MEAN, CIFAR10_STD
from giacheck.models.weights import load_weights, read_state_dict
from giacheck.models.yolo import (
    YOLO_STRIDES,
    BasicBlock,
    PlainConv,
    PreActConv,
    annotated_images,
    center_crop_boxes,
    detection_targets,
)
from giacheck.specs import AttackSpec, BNMode, ClientSpec

REPO = Path(__file__).resolve().parents[1]

CANONICAL = ("swin_t", "swinv2_t", "convnext_t", "maxvit_t", "vit_b16", "resnet18", "resnet18_preact")
ADAPTED = ("swin_t_cifar", "swinv2_t_cifar", "convnext_t_cifar", "maxvit_t_cifar", "vit_b16_cifar")
UNADAPTED = ("swin_t_lowres_unadapted", "swinv2_t_lowres_unadapted", "convnext_t_lowres_unadapted",
             "vit_b16_lowres_unadapted", "resnet18_lowres_unadapted", "resnet18_preact_lowres_unadapted")
YOLO = ("yolov8n", "yolov8n_preact", "yolov8n_basicblock")

# ImageNet ResNets fed 32x32 reach their last stage at 1x1: train-mode BatchNorm at batch 1 has one value per channel
# there and torch refuses it, so these run in eval mode at batch 1 (test_lowres_resnets_cannot_train_at_batch_1).
LAST_STAGE_1X1 = ("resnet18_lowres_unadapted", "resnet18_preact_lowres_unadapted")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way to reach another host fails and is recorded (a library may swallow the OSError)."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted; giacheck must work offline")

    for target, attr in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                         (socket, "getaddrinfo")):
        monkeypatch.setattr(target, attr, refuse)
    return attempts


def _bn_mode(name: str) -> BNMode:
    entry = get_entry(name)
    return BNMode.TRAIN if entry.has_batchnorm and name not in LAST_STAGE_1X1 else BNMode.EVAL


def _targets(name: str) -> torch.Tensor | dict[str, torch.Tensor]:
    return detection_targets(["bus"]) if get_entry(name).task == "detection" else torch.tensor([1])


def _norm_kinds(model: nn.Module) -> set[str]:
    """The layers ``ModelEntry.norm_kinds`` names: those ``stats_proxy`` reads (BatchNorm, LayerNorm). GroupNorm
    (``resnet18_gn_cifar``) keeps no statistics to read, so a GroupNorm model names none."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kinds.add("BatchNorm2d")
        elif type(m).__name__ == "LayerNorm2d":
            kinds.add("LayerNorm2d")
        elif isinstance(m, nn.LayerNorm):
            kinds.add("LayerNorm")
    return kinds


def _rand(size: int, seed: int) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ the whole registry
def test_registry_holds_the_zoo() -> None:
    assert set(CANONICAL + ADAPTED + UNADAPTED + YOLO) <= set(list_models())
    assert "maxvit_t_lowres_unadapted" not in list_models()  # partition 1 only: a different network (timm_zoo.py)


@pytest.mark.parametrize("name", list_models())
def test_entry_metadata(name: str) -> None:
    entry = get_entry(name)
    assert entry.name == name
    assert entry.check_resolution(entry.default_size) is None
    assert entry.task in ("classification", "detection")
    assert entry.has_batchnorm == ("BatchNorm2d" in entry.norm_kinds)
    assert len(entry.mean) == len(entry.std) == 3 and all(s > 0 for s in entry.std)
    assert entry.upstream and entry.description


@pytest.mark.parametrize("name", list_models())
def test_builds_offline_runs_and_gives_the_attack_a_gradient(name: str, no_network: list[str]) -> None:
    entry = get_entry(name)
    size = entry.default_size
    model = build(name, size)
    assert _norm_kinds(model) == set(entry.norm_kinds)
    assert not any(getattr(m, "fused_attn", False) for m in model.modules()), "fused attention breaks double backward"

    x = _rand(size, 0)
    with torch.no_grad():
        out = model.eval()(x)
    if entry.task == "detection":
        anchors = sum((size // int(s)) ** 2 for s in YOLO_STRIDES)
        assert out["scores"].shape == (1, entry.num_classes, anchors)
        assert torch.isfinite(out["scores"]).all() and torch.isfinite(out["boxes"]).all()
    else:
        assert out.shape == (1, entry.num_classes)
        assert torch.isfinite(out).all()

    targets = _targets(name)
    update = simulate_update(model, x, targets, ClientSpec(bn_mode=_bn_mode(name)))
    replica = Replica(model, update, targets)
    dummy = _rand(size, 1).requires_grad_(True)
    total, dist = replica.objective(AttackSpec(), None, functional=False)(dummy)
    (g,) = torch.autograd.grad(total, dummy)
    assert torch.isfinite(total) and torch.isfinite(dist)
    assert torch.isfinite(g).all()
    assert float(g.abs().sum()) > 0
    assert no_network == []


def test_no_network_from_import_to_attack_step(tmp_path: Path) -> None:
    """A fresh interpreter with sockets blocked before anything is imported builds every model and attacks."""
    script = textwrap.dedent("""
        import json, os, socket, sys
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network access attempted")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse
        import torch
        torch.set_num_threads(1)
        from giacheck.attack.objective import Replica
        from giacheck.client import simulate_update
        from giacheck.models import build, get_entry, list_models
        from giacheck.models.yolo import detection_targets
        from giacheck.specs import AttackSpec, BNMode, ClientSpec
        for name in list_models():
            build(name, get_entry(name).default_size)
        steps = {}
        for name, size, labels in (("yolov8n", 64, detection_targets(["zidane"])),
                                   ("swin_t_cifar", 32, torch.tensor([3]))):
            model = build(name, size)
            x = torch.rand(1, 3, size, size)
            update = simulate_update(model, x, labels, ClientSpec(bn_mode=BNMode.TRAIN))
            dummy = torch.rand(1, 3, size, size, requires_grad=True)
            total, _ = Replica(model, update, labels).objective(AttackSpec(), None, functional=False)(dummy)
            steps[name] = float(torch.autograd.grad(total, dummy)[0].abs().sum())
        print(json.dumps({
            "attempts": attempts, "steps": steps, "threads": torch.get_num_threads(),
            "omp": os.environ.get("OMP_NUM_THREADS"), "hf_offline": os.environ.get("HF_HUB_OFFLINE"),
            "yolo_offline": os.environ.get("YOLO_OFFLINE"), "yolo_config": os.environ.get("YOLO_CONFIG_DIR"),
            "imported": sorted({m.split(".")[0] for m in sys.modules} & {"timm", "ultralytics"}),
        }))
    """)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "YOLO_OFFLINE", "YOLO_CONFIG_DIR", "YOLO_VERBOSE")}
    env.update(HOME=str(home), MPLCONFIGDIR=str(tmp_path / "mpl"), XDG_CONFIG_HOME=str(home / ".config"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert all(v > 0 for v in result["steps"].values()), result["steps"]
    assert result["imported"] == ["timm", "ultralytics"]
    assert result["threads"] == 1 and result["omp"] is None, "importing ultralytics changed the thread settings"
    assert result["hf_offline"] == "1" and result["yolo_offline"] == "1"
    assert result["yolo_config"] and not result["yolo_config"].startswith(str(home))
    assert not (home / ".config" / "Ultralytics").exists()


# ----------------------------------------------------------------------------------------------- timm models
def test_canonical_and_adapted_metadata() -> None:
    for name in CANONICAL:
        entry = get_entry(name)
        assert entry.num_classes == 1000 and entry.default_size in (224, 256) and entry.upstream.startswith("timm:")
        assert entry.mean == (0.485, 0.456, 0.406) and entry.std == (0.229, 0.224, 0.225)
    for name in ADAPTED + UNADAPTED:
        entry = get_entry(name)
        assert entry.num_classes == 10 and entry.default_size == 32
        assert entry.mean == CIFAR10_MEAN and entry.std == CIFAR10_STD
    assert get_entry("swinv2_t").default_size == 256
    assert get_entry("vit_b16").check_resolution(32) is not None  # fixed position embedding: 224 only


_STEM_OR_HEAD = re.compile(r"(^|\.)(stem|patch_embed|head|pos_embed)(\.|$)|relative_position")


@pytest.mark.parametrize("adapted, canonical", [(f"{n}_cifar", n) for n in ("swin_t", "swinv2_t", "convnext_t",
                                                                            "maxvit_t", "vit_b16")])
def test_adaptation_keeps_depth_and_width(adapted: str, canonical: str) -> None:
    """Same parameter names (depth) and shapes (width) outside the stem/tokenizer, head and position tables."""
    a = dict(build(adapted, 32).net.named_parameters())
    c = dict(build(canonical, get_entry(canonical).default_size).net.named_parameters())
    assert a.keys() == c.keys()
    differ = [n for n in a if a[n].shape != c[n].shape]
    assert all(_STEM_OR_HEAD.search(n) for n in differ), differ


def test_swin_cifar_tokens_and_windows() -> None:
    for name in ("swin_t_cifar", "swinv2_t_cifar"):
        net = build(name, 32).net
        assert net.patch_embed.proj.kernel_size == (2, 2) and net.patch_embed.proj.stride == (2, 2)
        assert net.layers[0].blocks[0].window_size == (4, 4)
        assert net.layers[0].blocks[0].input_resolution == (16, 16)


def test_convnext_stems() -> None:
    adapted, canonical = build("convnext_t_cifar", 32).net.stem[0], build("convnext_t", 224).net.stem[0]
    assert (adapted.kernel_size, adapted.stride, adapted.padding) == ((3, 3), (1, 1), (1, 1))
    assert (canonical.kernel_size, canonical.stride) == ((4, 4), (4, 4))


def test_maxvit_cifar_stride1_stem_and_partition_2() -> None:
    model = build("maxvit_t_cifar", 32)
    assert model.net.stem.conv1.stride == (1, 1)
    partitions = {tuple(m.partition_size) for m in model.modules() if hasattr(m, "partition_size")}
    assert partitions == {(2, 2)}
    shapes = []
    handle = model.net.stages[0].register_forward_hook(lambda m, a, o: shapes.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        model.eval()(_rand(32, 0))
    handle.remove()
    assert shapes == [(16, 16)]


def test_vit_patch_sizes() -> None:
    assert build("vit_b16_cifar", 32).net.patch_embed.proj.kernel_size == (4, 4)
    assert build("vit_b16_lowres_unadapted", 32).net.patch_embed.proj.kernel_size == (16, 16)


def test_canonical_resnet18_keeps_imagenet_stem_and_nonzero_last_bn() -> None:
    net = build("resnet18", 224).net
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, nn.MaxPool2d)
    last = [p for n, p in net.named_parameters() if n.startswith("layer") and n.endswith("bn2.weight")]
    assert len(last) == 8 and all(bool((w != 0).all()) for w in last)  # zero_init_last=False


@pytest.mark.parametrize("name", LAST_STAGE_1X1)
def test_lowres_resnets_cannot_train_at_batch_1(name: str) -> None:
    """Documents the trap: the last stage is 1x1, so train-mode BN at bs1 sees one value per channel."""
    model = build(name, 32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        simulate_update(model, _rand(32, 0), torch.tensor([1]), ClientSpec(bn_mode=BNMode.TRAIN))


# -------------------------------------------------------------------------------------------------------- YOLO
def test_yolo_metadata() -> None:
    for name in YOLO:
        entry = get_entry(name)
        assert entry.task == "detection" and entry.num_classes == 80 and entry.default_size == 256
        assert entry.mean == (0.0, 0.0, 0.0) and entry.std == (1.0, 1.0, 1.0) and entry.size_multiple == 32


@pytest.mark.parametrize("size", [250, 100, 32])
def test_yolo_input_not_a_multiple_of_32(size: int) -> None:
    with pytest.raises(InvalidCaseError, match=r"multiple of 32|>= 64"):
        build("yolov8n", size)


def test_yolo_forward_rejects_an_input_of_the_wrong_size() -> None:
    model = build("yolov8n", 64)
    with pytest.raises(InvalidCaseError, match="multiples of 32"):
        model(torch.rand(1, 3, 64, 80))


def test_yolo_output_is_the_raw_head_in_both_modes_and_the_loss_uses_it() -> None:
    model = build("yolov8n", 64)
    x, targets = _rand(64, 0), detection_targets(["zidane"])
    outputs = {}
    for mode in (True, False):
        with torch.no_grad():
            out = model.train(mode)(x)
        assert isinstance(out, dict) and set(out) == {"boxes", "scores", "feats"}
        outputs[mode] = out
        loss = model.loss(out, targets)
        assert loss.ndim == 0 and torch.isfinite(loss) and float(loss) > 0
    assert not torch.equal(outputs[True]["scores"], outputs[False]["scores"])  # BN follows the mode


def test_yolo_eval_mode_attack_step_has_a_gradient() -> None:
    model = build("yolov8n", 64)
    targets = detection_targets(["bus"])
    update = simulate_update(model, _rand(64, 0), targets, ClientSpec(bn_mode=BNMode.EVAL))
    dummy = _rand(64, 1).requires_grad_(True)
    total, _ = Replica(model, update, targets).objective(AttackSpec(), None, functional=False)(dummy)
    (g,) = torch.autograd.grad(total, dummy)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_yolo_functional_gradient_matches_autograd() -> None:
    """``torch.func.grad`` works (``vmap`` does not: the assigner's ``nonzero``); both paths agree."""
    model = build("yolov8n_basicblock", 64)
    targets = detection_targets(["bus"])
    update = simulate_update(model, _rand(64, 0), targets, ClientSpec(bn_mode=BNMode.TRAIN))
    replica = Replica(model, update, targets)
    dummy = _rand(64, 1)
    g_func = torch.func.grad(lambda z: replica.objective(AttackSpec(), None)(z)[0])(dummy)
    d = dummy.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(replica.objective(AttackSpec(), None, functional=False)(d)[0], d)
    torch.testing.assert_close(g_func, g_auto, rtol=1e-3, atol=1e-7)


def test_yolo_fixed_dfl_projection_is_a_buffer_not_a_parameter() -> None:
    net = build("yolov8n", 64).net
    key = "model.22.dfl.conv.weight"
    assert key in net.state_dict() and key not in dict(net.named_parameters())
    assert all(p.requires_grad for p in net.parameters())


def test_yolov8n_preact_reorders_every_conv() -> None:
    from ultralytics.nn.modules.conv import Conv

    net = build("yolov8n_preact", 64).net
    assert not any(isinstance(m, Conv) for m in net.modules())
    assert isinstance(net.model[0], PlainConv) and net.model[0].f == -1 and net.model[0].i == 0
    preact = [m for m in net.modules() if isinstance(m, PreActConv)]
    assert len(preact) > 50
    assert all(m.bn.num_features == m.conv.in_channels for m in preact)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.eps, m.momentum) == (1e-3, 0.03)


def test_yolov8n_basicblock_replaces_every_c2f_and_is_shallower() -> None:
    from ultralytics.nn.modules.block import C2f

    plain, blocks = build("yolov8n", 64).net, build("yolov8n_basicblock", 64).net
    assert not any(isinstance(m, C2f) for m in blocks.modules())
    replaced = [i for i, m in enumerate(blocks.model) if isinstance(m, BasicBlock)]
    assert replaced == [i for i, m in enumerate(plain.model) if isinstance(m, C2f)] and len(replaced) == 8
    assert all(blocks.model[i].f == plain.model[i].f for i in replaced)

    def convs(net: nn.Module) -> int:
        return sum(isinstance(m, nn.Conv2d) for m in net.modules())

    assert convs(blocks) < convs(plain)


def test_yolo_num_classes_override() -> None:
    model = build("yolov8n", 64, num_classes=3)
    targets = {"batch_idx": torch.zeros(1), "cls": torch.tensor([[2.0]]), "bboxes": torch.tensor([[0.5, 0.5, .4, .4]])}
    assert torch.isfinite(model.loss(model(_rand(64, 0)), targets))


def test_detection_loss_rejects_bad_targets() -> None:
    model = build("yolov8n", 64)
    out = model(_rand(64, 0))
    with pytest.raises(InvalidCaseError, match=r"class id 80.*valid ids: 0\.\.79"):
        model.loss(out, {"batch_idx": torch.zeros(1), "cls": torch.tensor([80.0]), "bboxes": torch.rand(1, 4)})
    with pytest.raises(InvalidCaseError, match="batch_idx"):
        model.loss(out, torch.tensor([1]))
    with pytest.raises(InvalidCaseError, match=r"bboxes \(2, 3\)"):
        model.loss(out, {"batch_idx": torch.zeros(2), "cls": torch.zeros(2), "bboxes": torch.rand(2, 3)})


# ------------------------------------------------------------------------------------------------------- boxes
def test_annotations_are_plausible_coco_boxes() -> None:
    images = annotated_images()
    assert set(images) == {"bus", "zidane"}
    assert sorted(images["bus"].classes) == [0, 0, 0, 0, 5]  # four persons and a bus
    assert sorted(images["zidane"].classes) == [0, 0, 27]  # two persons and a tie
    for item in images.values():
        for cx, cy, w, h in item.boxes:
            assert 0 < w <= 1 and 0 < h <= 1
            assert cx - w / 2 >= -1e-4 and cx + w / 2 <= 1 + 1e-4 and cy - h / 2 >= -1e-4 and cy + h / 2 <= 1 + 1e-4


def test_detection_targets_in_batch_order() -> None:
    targets = detection_targets(["zidane", "bus"])
    assert targets["batch_idx"].tolist() == [0.0] * 3 + [1.0] * 5
    assert targets["cls"].shape == (8, 1) and targets["cls"].view(-1).tolist()[:3] == [0.0, 0.0, 27.0]
    assert targets["bboxes"].shape == (8, 4)
    assert bool((targets["bboxes"] >= 0).all() and (targets["bboxes"] <= 1).all())
    assert all(t.dtype == torch.float32 for t in targets.values())


def test_detection_targets_unknown_image() -> None:
    with pytest.raises(DatasetError, match=r"no box annotations for image 'astronaut'.*bus, zidane"):
        detection_targets(["astronaut"])


@pytest.mark.parametrize("height, width, box", [(60, 100, (30, 10, 50, 40)), (100, 60, (5, 30, 40, 90)),
                                                (60, 100, (10, 5, 40, 50))])
def test_center_crop_boxes_match_to_tensor_resized(height: int, width: int, box: tuple[int, int, int, int]) -> None:
    """A white rectangle drawn at a box lands where the mapped box says after giacheck's own center crop."""
    x1, y1, x2, y2 = box
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[y1:y2, x1:x2] = 255
    side = min(height, width)
    cropped = to_tensor_resized(img, side)[0]  # no resize: the crop alone
    ys, xs = torch.nonzero(cropped > 0.5, as_tuple=True)
    xywh = torch.tensor([[(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]])
    mapped, keep = center_crop_boxes(xywh, width, height)
    assert keep.tolist() == [True]
    cx, cy, w, h = (mapped[0] * side).tolist()
    expected = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) == pytest.approx(expected, abs=1e-3)


def test_center_crop_drops_boxes_outside_and_keeps_squares() -> None:
    outside = torch.tensor([[0.05, 0.5, 0.1, 0.2]])  # x in [0, 0.1] of a 200-wide image: left of the 100 crop
    mapped, keep = center_crop_boxes(outside, 200, 100)
    assert keep.tolist() == [False] and mapped.shape == (0, 4)
    boxes = torch.tensor([[0.3, 0.4, 0.2, 0.1], [0.7, 0.6, 0.5, 0.3]])
    mapped, keep = center_crop_boxes(boxes, 128, 128)
    assert keep.all() and torch.allclose(mapped, boxes)


# ----------------------------------------------------------------------------------------------------- weights
def test_safetensors_weights_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = build("yolov8n", 64, seed=1)
    path = tmp_path / "yolov8n.safetensors"
    save_file(source.net.state_dict(), str(path))
    loaded = build("yolov8n", 64, seed=2, weights=path)
    for (name, a), b in zip(source.net.state_dict().items(), loaded.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_torch_state_dict_of_a_normalized_model_loads(tmp_path: Path) -> None:
    source = build("lenet_sigmoid", 32, seed=1)
    path = tmp_path / "lenet.pt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)  # keys 'net.…' inside a checkpoint dict
    target = build("lenet_sigmoid", 32, seed=2).net
    report = load_weights(target, path)
    assert report.format == "torch" and report.loaded == len(target.state_dict())
    assert report.missing == () and report.unexpected == ()
    assert torch.equal(target.fc.weight, source.net.fc.weight)


def test_weights_with_wrong_shapes_name_the_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "yolov8n_nc3.safetensors"
    save_file(build("yolov8n", 64, num_classes=3).net.state_dict(), str(path))
    with pytest.raises(WeightsError) as info:
        build("yolov8n", 64, weights=path)
    message = str(info.value)
    assert isinstance(info.value, GiacheckError)
    assert "36 tensor(s) have other shapes" in message  # the class branch's widths follow the class count
    assert "model.22.cv3.0.0.conv.weight: file (64, 64, 3, 3) vs model (80, 64, 3, 3)" in message
    assert "num_classes" in message


def test_pickle_weights_need_the_trust_flag(tmp_path: Path) -> None:
    source = build("lenet_sigmoid", 32, seed=1)
    path = tmp_path / "whole_module.pt"
    torch.save(source.net, path)  # a pickled module object, not a state dict
    with pytest.raises(WeightsError, match=r"arbitrary pickled objects.*trust_pickle=True"):
        build("lenet_sigmoid", 32, weights=path)
    model = build("lenet_sigmoid", 32, seed=2, weights=path, trust_pickle=True)
    assert torch.equal(model.net.fc.weight, source.net.fc.weight)
    assert read_state_dict(path, trust_pickle=True)[1] == "pickle"


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = build("lenet_sigmoid", 32).net.state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 key\(s\) of the model missing from the file \(fc\.bias\).*"
                                           r"1 unexpected key\(s\) in the file \(extra\.weight\)"):
        build("lenet_sigmoid", 32, weights=path)
    report = load_weights(build("lenet_sigmoid", 32).net, path, strict=False)
    assert report.missing == ("fc.bias",) and report.unexpected == ("extra.weight",)


def test_unreadable_weights_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build("lenet_sigmoid", 32, weights=tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        build("lenet_sigmoid", 32, weights=garbage)
    bad_st = tmp_path / "garbage.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError, match="cannot read safetensors file"):
        build("lenet_sigmoid", 32, weights=bad_st)
    not_a_state_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(WeightsError, match="not a state dict"):
        build("lenet_sigmoid", 32, weights=not_a_state_dict)


# ------------------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("typo, expected", [("swin_t_cifr", "swin_t_cifar"), ("yolov8", "yolov8n"),
                                            ("convnext_tiny", "convnext_t")])
def test_unknown_name_lists_close_matches(typo: str, expected: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        build(typo, 32)
    message = str(info.value)
    assert f"'{typo}'" in message
    assert expected in message.split("Did you mean: ")[1].split("?")[0]


@pytest.mark.parametrize("spec, match", [("giacheck.models.yolo:no_such_factory", "has no 'no_such_factory'"),
                                         ("giacheck.models.yolo:YOLO_STRIDES", "has no callable 'YOLO_STRIDES'"),
                                         ("giacheck_no_such_package.zoo:net", "cannot import module")])
def test_bad_module_function(spec: str, match: str) -> None:
    with pytest.raises(UnknownModelError, match=match):
        build(spec, 32)


def test_vendor_function_reusing_a_zoo_factory() -> None:
    """'package.module:function' builds through the same path: here a registered zoo function named by import."""
    model = build("giacheck.models.timm_zoo:swin_t_cifar", 32)
    assert isinstance(model, NormalizedModel) and model.entry.name == "swin_t_cifar"
