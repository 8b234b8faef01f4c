"""The paper's ImageNet classifiers from timm: canonical, adapted to 32x32 (§4.5.3), and unadapted at 32x32.

Three forms per architecture (paper §4.5, §5.2, §5.3):

- canonical (``swin_t``, ``vit_b16``, ...): the timm model at its canonical resolution, 1000 classes;
- ``<name>_cifar``: adapted to 32x32 the way §4.5.3 describes — the stem / tokenization keeps spatial detail
  (smaller patches or windows, stride-1 stem), depth and width unchanged, 10 classes;
- ``<name>_lowres_unadapted``: the canonical stem fed 32x32 images, as prior work did; only where it runs.
  Not registered: ``maxvit_t_lowres_unadapted`` — with the canonical stride-2 stem a 32x32 input reaches the last
  stage at 1x1, so the only partition size that fits is 1, where block and grid attention attend to a single
  token each: that is a different (attention-free) network, not "the canonical model fed small images".

``maxvit_t_cifar`` is timm's model built for 64x64 (partition = img_size // 32 = 2, the partition size of the
paper's code) with a stride-1 stem, fed 32x32: its stages run at 16/8/4/2 px, so 2 is also the largest partition
that divides every stage (4 fails at the 2x2 stage), and no partition override is offered.

Every model is built with ``pretrained=False`` (never a download), ``drop_rate=0``, ``drop_path_rate=0`` (Swin
defaults to 0.1) and fused attention off on every module: the fused SDPA kernels do not support the double
backward the attack needs (DESIGN §9). ResNets keep ``zero_init_last=False`` (see ``resnets.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from giacheck.models.registry import ModelEntry, register_model

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "disable_fused_attention"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Factory = Callable[[int, int], nn.Module]
Adapt = Callable[[nn.Module], None]


def disable_fused_attention(net: nn.Module) -> None:
    """Switch every timm attention module to the explicit softmax path (double backward works there)."""
    for module in net.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False


def _timm_factory(upstream: str, adapt: Adapt | None = None, **kwargs: object) -> Factory:
    """A factory ``(resolution, num_classes) -> module`` for ``timm.create_model(upstream, **kwargs)``, offline."""

    def factory(resolution: int, num_classes: int) -> nn.Module:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pretrained=False never downloads; belt and braces
        import timm

        net = timm.create_model(upstream, pretrained=False, num_classes=num_classes, drop_rate=0.0,
                                drop_path_rate=0.0, **kwargs)
        if adapt is not None:
            adapt(net)
        disable_fused_attention(net)
        return net

    return factory


def _convnext_cifar_stem(net: nn.Module) -> None:
    """Replace ConvNeXt's 4x4 stride-4 patchify stem conv by a 3x3 stride-1 conv (paper §4.5.3)."""
    old = net.stem[0]
    net.stem[0] = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1)


def _maxvit_stride1_stem(net: nn.Module) -> None:
    """Make MaxViT's first stem conv stride 1 (it is a TF 'same'-padded conv, so padding follows the stride)."""
    net.stem.conv1.stride = (1, 1)


#: What every 32x32 entry shares: CIFAR-10's input size, classes and normalization.
_LOWRES: Mapping[str, Any] = MappingProxyType(
    {"default_size": 32, "num_classes": 10, "mean": CIFAR10_MEAN, "std": CIFAR10_STD})


def _lowres_entry(*, name: str, upstream: str, factory: Factory, **metadata: Any) -> ModelEntry:
    """An entry of a model fed 32x32 images (adapted or not): ``_LOWRES`` fills size, classes and CIFAR-10 mean/std."""
    return ModelEntry(name=name, upstream=upstream, factory=factory, **_LOWRES, **metadata)


# ------------------------------------------------------------------------------------------------ canonical
@register_model
def swin_t() -> ModelEntry:
    """Swin-T (timm ``swin_tiny_patch4_window7_224``) at 224x224, 1000 classes."""
    return ModelEntry(
        name="swin_t", upstream="timm:swin_tiny_patch4_window7_224",
        factory=_timm_factory("swin_tiny_patch4_window7_224"),
        default_size=224, num_classes=1000, sizes=(224,), norm_kinds=("LayerNorm",),
        description="Swin-T, patch 4, window 7, canonical ImageNet resolution",
    )


@register_model
def swinv2_t() -> ModelEntry:
    """SwinV2-T (timm ``swinv2_tiny_window8_256``) at 256x256, 1000 classes."""
    return ModelEntry(
        name="swinv2_t", upstream="timm:swinv2_tiny_window8_256", factory=_timm_factory("swinv2_tiny_window8_256"),
        default_size=256, num_classes=1000, sizes=(256,), norm_kinds=("LayerNorm",),
        description="SwinV2-T, patch 4, window 8, canonical ImageNet resolution",
    )


@register_model
def convnext_t() -> ModelEntry:
    """ConvNeXt-T (timm ``convnext_tiny``) at 224x224, 1000 classes."""
    return ModelEntry(
        name="convnext_t", upstream="timm:convnext_tiny", factory=_timm_factory("convnext_tiny"),
        default_size=224, num_classes=1000, size_multiple=32, min_size=32, norm_kinds=("LayerNorm2d", "LayerNorm"),
        description="ConvNeXt-T, 4x4 stride-4 patchify stem, canonical ImageNet resolution",
    )


@register_model
def maxvit_t() -> ModelEntry:
    """MaxViT-T (timm ``maxvit_tiny_tf_224``) at 224x224, 1000 classes."""
    return ModelEntry(
        name="maxvit_t", upstream="timm:maxvit_tiny_tf_224", factory=_timm_factory("maxvit_tiny_tf_224"),
        default_size=224, num_classes=1000, sizes=(224,), norm_kinds=("BatchNorm2d", "LayerNorm2d", "LayerNorm"),
        has_batchnorm=True, description="MaxViT-T, stride-2 stem, partition 7, canonical ImageNet resolution",
    )


@register_model
def vit_b16() -> ModelEntry:
    """ViT-B/16 (timm ``vit_base_patch16_224``) at 224x224, 1000 classes."""
    return ModelEntry(
        name="vit_b16", upstream="timm:vit_base_patch16_224", factory=_timm_factory("vit_base_patch16_224"),
        default_size=224, num_classes=1000, sizes=(224,), norm_kinds=("LayerNorm",),
        description="ViT-B/16, 16x16 patches, canonical ImageNet resolution",
    )


@register_model
def resnet18() -> ModelEntry:
    """Post-activation ResNet-18 (timm ``resnet18``, ``zero_init_last=False``) at 224x224, 1000 classes."""
    return ModelEntry(
        name="resnet18", upstream="timm:resnet18", factory=_timm_factory("resnet18", zero_init_last=False),
        default_size=224, num_classes=1000, size_multiple=32, min_size=32, norm_kinds=("BatchNorm2d",),
        has_batchnorm=True, description="post-activation ResNet-18, ImageNet stem (7x7 s2 conv + max-pool)",
    )


@register_model
def resnet18_preact() -> ModelEntry:
    """Pre-activation ResNet-18 (timm ``resnetv2_18``, ``zero_init_last=False``) at 224x224, 1000 classes."""
    return ModelEntry(
        name="resnet18_preact", upstream="timm:resnetv2_18",
        factory=_timm_factory("resnetv2_18", zero_init_last=False),
        default_size=224, num_classes=1000, size_multiple=32, min_size=32, norm_kinds=("BatchNorm2d",),
        has_batchnorm=True, description="pre-activation ResNet-18 (v2), ImageNet stem (7x7 s2 conv + max-pool)",
    )


# ------------------------------------------------------------------------------------- adapted to 32x32 (§4.5.3)
@register_model
def swin_t_cifar() -> ModelEntry:
    """Swin-T adapted to 32x32: patch 2, window 4 (depth and width of Swin-T), 10 classes."""
    return _lowres_entry(
        name="swin_t_cifar", upstream="timm:swin_tiny_patch4_window7_224",
        factory=_timm_factory("swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4),
        sizes=(32,), norm_kinds=("LayerNorm",), description="Swin-T, patch 2, window 4: 16x16 tokens at 32x32",
    )


@register_model
def swinv2_t_cifar() -> ModelEntry:
    """SwinV2-T adapted to 32x32: patch 2, window 4 (depth and width of SwinV2-T), 10 classes."""
    return _lowres_entry(
        name="swinv2_t_cifar", upstream="timm:swinv2_tiny_window8_256",
        factory=_timm_factory("swinv2_tiny_window8_256", img_size=32, patch_size=2, window_size=4),
        sizes=(32,), norm_kinds=("LayerNorm",), description="SwinV2-T, patch 2, window 4: 16x16 tokens at 32x32",
    )


@register_model
def convnext_t_cifar() -> ModelEntry:
    """ConvNeXt-T adapted to 32x32: 3x3 stride-1 stem conv instead of 4x4 stride 4 (paper §4.5.3), 10 classes."""
    return _lowres_entry(
        name="convnext_t_cifar", upstream="timm:convnext_tiny",
        factory=_timm_factory("convnext_tiny", adapt=_convnext_cifar_stem),
        size_multiple=8, min_size=8, norm_kinds=("LayerNorm2d", "LayerNorm"),
        description="ConvNeXt-T, 3x3 stride-1 stem conv",
    )


@register_model
def maxvit_t_cifar() -> ModelEntry:
    """MaxViT-T adapted to 32x32: built for 64x64 (partition 2) with a stride-1 stem, fed 32x32, 10 classes."""
    return _lowres_entry(
        name="maxvit_t_cifar", upstream="timm:maxvit_tiny_tf_224",
        factory=_timm_factory("maxvit_tiny_tf_224", adapt=_maxvit_stride1_stem, img_size=64),
        sizes=(32,), norm_kinds=("BatchNorm2d", "LayerNorm2d", "LayerNorm"), has_batchnorm=True,
        description="MaxViT-T, stride-1 stem, block/grid partition 2 (as the paper's code)",
    )


@register_model
def vit_b16_cifar() -> ModelEntry:
    """ViT-B adapted to 32x32: 4x4 patches (64 tokens), depth and width of ViT-B/16, 10 classes."""
    return _lowres_entry(
        name="vit_b16_cifar", upstream="timm:vit_base_patch16_224",
        factory=_timm_factory("vit_base_patch16_224", img_size=32, patch_size=4),
        sizes=(32,), norm_kinds=("LayerNorm",), description="ViT-B, 4x4 patches: 8x8 tokens at 32x32",
    )


# ------------------------------------------------------------------------- canonical stems fed 32x32 (prior work)
@register_model
def swin_t_lowres_unadapted() -> ModelEntry:
    """Swin-T with its canonical patch 4 / window 7 fed 32x32 (8x8 tokens; windows padded), 10 classes."""
    return _lowres_entry(
        name="swin_t_lowres_unadapted", upstream="timm:swin_tiny_patch4_window7_224",
        factory=_timm_factory("swin_tiny_patch4_window7_224", img_size=32),
        sizes=(32,), norm_kinds=("LayerNorm",),
        description="Swin-T, canonical patch 4 / window 7, fed 32x32 without adaptation",
    )


@register_model
def swinv2_t_lowres_unadapted() -> ModelEntry:
    """SwinV2-T with its canonical patch 4 / window 8 fed 32x32 (8x8 tokens, one window), 10 classes."""
    return _lowres_entry(
        name="swinv2_t_lowres_unadapted", upstream="timm:swinv2_tiny_window8_256",
        factory=_timm_factory("swinv2_tiny_window8_256", img_size=32),
        sizes=(32,), norm_kinds=("LayerNorm",),
        description="SwinV2-T, canonical patch 4 / window 8, fed 32x32 without adaptation",
    )


@register_model
def convnext_t_lowres_unadapted() -> ModelEntry:
    """ConvNeXt-T with its canonical 4x4 stride-4 stem fed 32x32, 10 classes."""
    return _lowres_entry(
        name="convnext_t_lowres_unadapted", upstream="timm:convnext_tiny", factory=_timm_factory("convnext_tiny"),
        size_multiple=32, min_size=32, norm_kinds=("LayerNorm2d", "LayerNorm"),
        description="ConvNeXt-T, canonical 4x4 stride-4 stem, fed 32x32 without adaptation",
    )


@register_model
def vit_b16_lowres_unadapted() -> ModelEntry:
    """ViT-B/16 with its canonical 16x16 patches fed 32x32 (2x2 tokens), 10 classes."""
    return _lowres_entry(
        name="vit_b16_lowres_unadapted", upstream="timm:vit_base_patch16_224",
        factory=_timm_factory("vit_base_patch16_224", img_size=32),
        sizes=(32,), norm_kinds=("LayerNorm",),
        description="ViT-B/16, canonical 16x16 patches, fed 32x32 without adaptation",
    )


@register_model
def resnet18_lowres_unadapted() -> ModelEntry:
    """Post-activation ResNet-18 with its ImageNet stem (7x7 s2 conv + max-pool) fed 32x32, 10 classes."""
    return _lowres_entry(
        name="resnet18_lowres_unadapted", upstream="timm:resnet18",
        factory=_timm_factory("resnet18", zero_init_last=False),
        size_multiple=32, min_size=32, norm_kinds=("BatchNorm2d",), has_batchnorm=True,
        description="post-activation ResNet-18, ImageNet stem, fed 32x32 without adaptation (last stage 1x1: "
                    "train-mode BN needs batch >= 2)",
    )


@register_model
def resnet18_preact_lowres_unadapted() -> ModelEntry:
    """Pre-activation ResNet-18 (v2) with its ImageNet stem fed 32x32, 10 classes."""
    return _lowres_entry(
        name="resnet18_preact_lowres_unadapted", upstream="timm:resnetv2_18",
        factory=_timm_factory("resnetv2_18", zero_init_last=False),
        size_multiple=32, min_size=32, norm_kinds=("BatchNorm2d",), has_batchnorm=True,
        description="pre-activation ResNet-18 (v2), ImageNet stem, fed 32x32 without adaptation (last stage 1x1: "
                    "train-mode BN needs batch >= 2)",
    )
