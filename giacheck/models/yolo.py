"""YOLOv8-nano detection models from ultralytics, built offline from yaml, and the variants of paper §5.4.

- ``yolov8n``: the unmodified ``DetectionModel('yolov8n.yaml')``.
- ``yolov8n_preact``: every ultralytics ``Conv`` (conv → BN → SiLU) reordered to pre-activation (BN → SiLU → conv,
  He et al. 2016); the stem stays a plain convolution, as in pre-activation ResNets.
- ``yolov8n_basicblock``: every CSP ``C2f`` block replaced by one ResNet BasicBlock (3x3 conv → BN → ReLU →
  3x3 conv → BN, plus identity or 1x1-conv/BN projection shortcut, → ReLU): shallower, with skip connections.

The models take [0,1] pixels (mean 0, std 1). Their output, in train *and* eval mode, is the detection head's raw
training output ``{"boxes", "scores", "feats"}``: ultralytics' ``Detect`` head returns ``(decoded, raw)`` in eval
mode, and a forward hook keeps only ``raw``. BatchNorm follows the client's mode (``model.train(False)`` freezes the
statistics) while the loss always sees the training-format predictions, so an eval-mode client and the attacker's
eval-mode replica compute the real training loss. The loss is ultralytics' ``v8DetectionLoss`` summed over its
(box, cls, dfl) vector — the scalar the ultralytics trainer backpropagates (it scales with the batch size).
Restarts and trials are not stacked: the loss's target assigner couples a batch's images (and uses ``nonzero``, a
data-dependent shape), so they run one after another. ``torch.func.grad`` and autograd double backward both work.

Random initialization and eval-mode BatchNorm do not mix here: ultralytics keeps PyTorch's default conv init, and
with running statistics still (0, 1) the activations shrink ~10x per stage (std ~1e-9 at P5 for ``yolov8n`` at
256 px), so the head's output — and the client's update — do not depend on the image: ``1 − cos`` between the
update of ``bus`` and that of a random or a gray image is ~1e-7 (float32 noise) for ``yolov8n`` and
``yolov8n_preact``, ~1e-4 for ``yolov8n_basicblock``. An eval-mode case on an untrained YOLO is vacuous; give it
trained weights or calibrated running statistics. Train mode is unaffected (``1 − cos`` ≈ 1 for other images).

Ground-truth boxes for the bundled ``bus`` and ``zidane`` images live in ``giacheck/assets/boxes.json``
(hand-annotated, normalized xywh in the original image, COCO class ids); :func:`detection_targets` maps them
through the same center crop as :func:`giacheck.data.to_tensor_resized`. Boxes are labels, known to the attacker
(DESIGN §4), not private data.

Importing ultralytics is deferred to the factory, with ``YOLO_OFFLINE=1``, ``YOLO_VERBOSE=False`` (unless set) and
``YOLO_CONFIG_DIR`` in a temporary folder (unless set); the torch thread count and ``OMP_NUM_THREADS`` that its
import may change are restored.
"""

from __future__ import annotations

import atexit
import functools
import importlib.resources
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType, SimpleNamespace
from typing import Any

import torch
from torch import nn

from giacheck.errors import DatasetError, InvalidCaseError
from giacheck.models.registry import ModelEntry, register_model

__all__ = [
    "YOLO_STRIDES",
    "AnnotatedImage",
    "BasicBlock",
    "DetectionLoss",
    "PreActConv",
    "annotated_images",
    "center_crop_boxes",
    "detection_targets",
    "import_ultralytics",
]

log = logging.getLogger("giacheck.models.yolo")

#: Strides of YOLOv8's three detection levels (P3, P4, P5); inputs must be multiples of the largest.
YOLO_STRIDES: tuple[float, float, float] = (8.0, 16.0, 32.0)

_YOLO_MEAN = (0.0, 0.0, 0.0)
_YOLO_STD = (1.0, 1.0, 1.0)
_COCO_CLASSES = 80


# ------------------------------------------------------------------------------------------- ultralytics, offline
@functools.cache
def import_ultralytics() -> ModuleType:
    """Import ``ultralytics`` offline and quiet, keeping this process's thread settings; returns ``ultralytics``."""
    already = "ultralytics" in sys.modules
    threads = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "YOLO_CONFIG_DIR" not in os.environ:
        config_dir = tempfile.mkdtemp(prefix="giacheck-ultralytics-")
        atexit.register(shutil.rmtree, config_dir, ignore_errors=True)
        os.environ["YOLO_CONFIG_DIR"] = config_dir
    if already:
        log.debug("ultralytics was imported before giacheck could set YOLO_OFFLINE/YOLO_CONFIG_DIR")
    import ultralytics
    import ultralytics.nn.tasks

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)  # ultralytics sets it to 1 for child processes
    else:
        os.environ["OMP_NUM_THREADS"] = omp
    return ultralytics


# ----------------------------------------------------------------------------------------------------- loss
class DetectionLoss:
    """``(raw head output, targets) -> scalar``: ultralytics' ``v8DetectionLoss(...)[0].sum()``.

    ``targets`` is an ultralytics batch dict: ``batch_idx`` (N,), ``cls`` (N,) or (N, 1) COCO ids, ``bboxes``
    (N, 4) normalized xywh. The criterion is built per (device, classes, DFL bins), read off the predictions, so a
    model moved to another device or built with another ``num_classes`` gets a matching criterion.
    """

    def __init__(self, strides: Sequence[float] = YOLO_STRIDES) -> None:
        self.strides = tuple(float(s) for s in strides)
        self._criteria: dict[tuple[str, int, int], Any] = {}

    def __call__(self, outputs: Any, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        preds = outputs[1] if isinstance(outputs, tuple) else outputs
        if not isinstance(preds, Mapping) or not {"boxes", "scores", "feats"} <= set(preds):
            raise InvalidCaseError(
                f"the detection loss needs the YOLO head's raw output dict with 'boxes', 'scores', 'feats', got "
                f"{type(preds).__name__}; build the model with giacheck.models.build('yolov8n', ...)"
            )
        _check_targets(targets, num_classes=preds["scores"].shape[1])
        loss, _ = self._criterion(preds)(preds, targets)
        return loss.sum()

    def _criterion(self, preds: Mapping[str, Any]) -> Any:
        device = preds["scores"].device
        nc, reg_max = int(preds["scores"].shape[1]), int(preds["boxes"].shape[1]) // 4
        key = (str(device), nc, reg_max)
        if key not in self._criteria:
            import_ultralytics()
            from ultralytics.cfg import DEFAULT_CFG, get_cfg
            from ultralytics.utils.loss import v8DetectionLoss

            # What v8DetectionLoss reads from a DetectionModel: parameters (device), args (gains), model[-1].
            head = SimpleNamespace(stride=torch.tensor(self.strides, device=device), nc=nc, reg_max=reg_max)
            source = SimpleNamespace(parameters=lambda: iter([torch.empty(0, device=device)]),
                                     args=get_cfg(DEFAULT_CFG), model=[head])
            self._criteria[key] = v8DetectionLoss(source)
        return self._criteria[key]


def _check_targets(targets: Mapping[str, torch.Tensor], *, num_classes: int) -> None:
    """Reject a detection batch the loss cannot use, saying what is expected."""
    expected = "a dict with batch_idx (N,), cls (N,) or (N, 1) and bboxes (N, 4) normalized xywh"
    if not isinstance(targets, Mapping) or not {"batch_idx", "cls", "bboxes"} <= set(targets):
        keys = sorted(targets) if isinstance(targets, Mapping) else type(targets).__name__
        raise InvalidCaseError(f"detection targets must be {expected}; got {keys} "
                               "(giacheck.models.yolo.detection_targets builds one for bundled images)")
    n = targets["batch_idx"].numel()
    if targets["cls"].numel() != n or tuple(targets["bboxes"].shape) != (n, 4):
        shapes = {k: tuple(targets[k].shape) for k in ("batch_idx", "cls", "bboxes")}
        raise InvalidCaseError(f"detection targets must be {expected}; got batch_idx {shapes['batch_idx']}, "
                               f"cls {shapes['cls']}, bboxes {shapes['bboxes']}")
    if n and int(targets["cls"].max()) >= num_classes:
        raise InvalidCaseError(f"detection targets hold class id {int(targets['cls'].max())}, but the model has "
                               f"{num_classes} classes (valid ids: 0..{num_classes - 1})")


# ---------------------------------------------------------------------------------------------- architecture
class PreActConv(nn.Module):
    """Pre-activation form of an ultralytics ``Conv``: BN → SiLU → conv (the conv keeps its kernel, stride, groups)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(conv.in_channels, eps=1e-3, momentum=0.03)  # ultralytics' BN settings
        self.act = nn.SiLU()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.bn(x)))


class PlainConv(nn.Module):
    """A convolution alone: the stem of a pre-activation network (normalization comes with the next block)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BasicBlock(nn.Module):
    """ResNet BasicBlock (He et al. 2016): two 3x3 conv+BN with ReLU, identity or 1x1 conv+BN shortcut, ReLU."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.conv2 = nn.Conv2d(c2, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.ReLU()
        self.shortcut = (nn.Identity() if c1 == c2 else
                         nn.Sequential(nn.Conv2d(c1, c2, 1, bias=False), nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(out + self.shortcut(x))


def _raw_head_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """Forward hook on ``Detect``: keep the raw training-format predictions in eval mode too."""
    return output[1] if isinstance(output, tuple) else output


def _check_input_size(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook on the DetectionModel: inputs must be multiples of the largest stride."""
    x = args[0]
    if isinstance(x, torch.Tensor) and (x.shape[-2] % 32 or x.shape[-1] % 32):
        raise InvalidCaseError(f"YOLO inputs must have height and width that are multiples of 32 (the P5 stride), "
                               f"got {tuple(x.shape[-2:])}; resize the images (e.g. to 256 or 640)")


def _replace(parent: nn.Module, name: str, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` where ``old`` was, keeping the routing attributes ultralytics sets on top-level layers."""
    for attr in ("f", "i", "type"):
        if hasattr(old, attr):
            setattr(new, attr, getattr(old, attr))
    setattr(parent, name, new)


def _to_preact(net: nn.Module) -> None:
    from ultralytics.nn.modules.conv import Conv

    stem = net.model[0]
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv):
                _replace(parent, name, child, PlainConv(child.conv) if child is stem else PreActConv(child.conv))


def _to_basicblocks(net: nn.Module) -> None:
    from ultralytics.nn.modules.block import C2f

    for name, layer in list(net.model.named_children()):
        if type(layer) is C2f:
            block = BasicBlock(layer.cv1.conv.in_channels, layer.cv2.conv.out_channels)
            _replace(net.model, name, layer, block)


def _fixed_parameters_to_buffers(net: nn.Module) -> None:
    """Parameters nobody trains (the DFL projection, ``requires_grad=False``) become buffers of the same name.

    A client update then holds exactly the trained tensors, and ``state_dict`` keys stay those of ultralytics.
    """
    for module in net.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if not p.requires_grad:
                del module._parameters[name]
                module.register_buffer(name, p.detach().clone())


#: How each variant changes ``yolov8n.yaml``'s network (in place); ``plain`` keeps it.
_VARIANTS: Mapping[str, Callable[[nn.Module], None] | None] = MappingProxyType(
    {"plain": None, "preact": _to_preact, "basicblock": _to_basicblocks})


def _yolo_factory(variant: str) -> Callable[[int, int], nn.Module]:
    adapt = _VARIANTS[variant]

    def factory(resolution: int, num_classes: int) -> nn.Module:
        import_ultralytics()
        from ultralytics.cfg import DEFAULT_CFG, get_cfg
        from ultralytics.nn.tasks import DetectionModel

        net = DetectionModel("yolov8n.yaml", ch=3, nc=num_classes, verbose=False)
        strides = tuple(float(s) for s in net.stride)
        if strides != YOLO_STRIDES:
            raise InvalidCaseError(f"yolov8n.yaml built with strides {strides}, expected {YOLO_STRIDES}; "
                                   "this ultralytics version is not supported")
        if adapt is not None:
            adapt(net)
        _fixed_parameters_to_buffers(net)
        net.args = get_cfg(DEFAULT_CFG)  # ultralytics' own model.loss() reads the loss gains from here
        net.model[-1].register_forward_hook(_raw_head_output)
        net.register_forward_pre_hook(_check_input_size)
        return net

    return factory


def _yolo_entry(name: str, variant: str, description: str) -> ModelEntry:
    return ModelEntry(
        name=name, upstream="ultralytics:yolov8n.yaml" + ("" if variant == "plain" else f" ({variant})"),
        factory=_yolo_factory(variant), default_size=256, num_classes=_COCO_CLASSES, mean=_YOLO_MEAN, std=_YOLO_STD,
        task="detection", norm_kinds=("BatchNorm2d",), has_batchnorm=True, size_multiple=32, min_size=64,
        loss=DetectionLoss(), description=description,
    )


@register_model
def yolov8n() -> ModelEntry:
    """YOLOv8-nano, unmodified ultralytics DetectionModel from yolov8n.yaml (COCO, 80 classes)."""
    return _yolo_entry("yolov8n", "plain", "YOLOv8n detector, ultralytics yaml, detection loss")


@register_model
def yolov8n_preact() -> ModelEntry:
    """YOLOv8-nano with pre-activation conv blocks (BN → SiLU → conv), paper §5.4."""
    return _yolo_entry("yolov8n_preact", "preact",
                       "YOLOv8n with every Conv reordered to BN → SiLU → conv (stem: plain conv)")


@register_model
def yolov8n_basicblock() -> ModelEntry:
    """YOLOv8-nano with every C2f block replaced by a ResNet BasicBlock, paper §5.4."""
    return _yolo_entry("yolov8n_basicblock", "basicblock",
                       "YOLOv8n with C2f → ResNet BasicBlock (shallower, skip connections)")


# ------------------------------------------------------------------------------------------------------- boxes
@dataclass(frozen=True, slots=True, kw_only=True)
class AnnotatedImage:
    """Hand-annotated boxes of one bundled image: normalized xywh in the original (uncropped) image."""

    name: str
    width: int
    height: int
    classes: tuple[int, ...]
    boxes: tuple[tuple[float, float, float, float], ...]


@functools.cache
def annotated_images() -> dict[str, AnnotatedImage]:
    """Box annotations shipped in ``giacheck/assets/boxes.json``, by bundled image name."""
    raw = json.loads(importlib.resources.files("giacheck.assets").joinpath("boxes.json").read_text("utf-8"))
    out = {}
    for name, item in raw["images"].items():
        objects = item["objects"]
        out[name] = AnnotatedImage(
            name=name, width=int(item["width"]), height=int(item["height"]),
            classes=tuple(int(o["class"]) for o in objects),
            boxes=tuple(tuple(float(v) for v in o["xywh"]) for o in objects),
        )
    return out


def center_crop_boxes(boxes: torch.Tensor, width: int, height: int, *,
                      min_visible: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Map normalized xywh boxes of a ``width`` x ``height`` image through the centered square crop.

    The crop is the one :func:`giacheck.data.to_tensor_resized` takes (side ``min(w, h)``, offsets floored);
    resizing afterwards keeps normalized coordinates. Boxes are clipped to the crop; a box keeping less than
    ``min_visible`` of its area (ultralytics' ``box_candidates`` default) or less than a pixel is dropped.

    Returns:
        ``(boxes (M, 4) normalized xywh in the crop, keep (N,) bool mask over the input boxes)``.
    """
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    xywh = boxes.to(torch.float64).reshape(-1, 4) * scale
    x1, y1 = xywh[:, 0] - xywh[:, 2] / 2 - left, xywh[:, 1] - xywh[:, 3] / 2 - top
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    cx1, cy1, cx2, cy2 = (v.clamp(0, side) for v in (x1, y1, x2, y2))
    w, h = cx2 - cx1, cy2 - cy1
    area = (xywh[:, 2] * xywh[:, 3]).clamp_min(1e-12)
    keep = (w >= 1) & (h >= 1) & (w * h >= min_visible * area)
    out = torch.stack([(cx1 + cx2) / 2, (cy1 + cy2) / 2, w, h], dim=1)[keep] / side
    return out.to(torch.float32), keep


def detection_targets(names: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Ultralytics batch targets for bundled images ``names`` in batch order, in center-cropped coordinates.

    Returns:
        ``{"batch_idx": (N,), "cls": (N, 1), "bboxes": (N, 4)}`` float32 on ``device``, boxes normalized xywh.

    Raises:
        DatasetError: a name has no box annotation (the message lists the annotated images).
    """
    known = annotated_images()
    batch_idx, classes, boxes = [], [], []
    for i, name in enumerate(names):
        if name not in known:
            raise DatasetError(f"no box annotations for image {name!r}; annotated bundled images: "
                               f"{', '.join(sorted(known))} (giacheck/assets/boxes.json)")
        item = known[name]
        cropped, keep = center_crop_boxes(torch.tensor(item.boxes), item.width, item.height)
        kept = [c for c, k in zip(item.classes, keep.tolist(), strict=True) if k]
        batch_idx += [float(i)] * len(kept)
        classes += [float(c) for c in kept]
        boxes.append(cropped)
    return {
        "batch_idx": torch.tensor(batch_idx, dtype=torch.float32, device=device),
        "cls": torch.tensor(classes, dtype=torch.float32, device=device).view(-1, 1),
        "bboxes": torch.cat(boxes).to(device) if boxes else torch.zeros(0, 4, device=device),
    }
