"""ResNet-18 post- and pre-activation (timm) with a CIFAR stem: 3x3 stride-1 conv, no max-pool.

``zero_init_last=False`` on purpose: timm's default zero-initializes the last BatchNorm gamma of every
residual block, so at random initialization each block is the identity on its residual branch, the update
carries almost no information about the input, and the attack fails (SSIM ~0.1 vs 0.84 on the positive
control, DESIGN §9). The paper's models were randomly initialized without that trick.
"""

from __future__ import annotations

from torch import nn

from giacheck.models.registry import ModelEntry, register_model
from giacheck.models.timm_zoo import _timm_factory


def _cifar_stem(net: nn.Module) -> None:
    """Post-activation ResNet: 3x3 stride-1 stem conv, no max-pool."""
    net.conv1, net.maxpool = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False), nn.Identity()


def _cifar_stem_preact(net: nn.Module) -> None:
    """Pre-activation ResNet (timm ResNetV2): the same stem change on ``net.stem``."""
    net.stem.conv, net.stem.pool = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False), nn.Identity()


def _group_norm(num_channels: int, **kwargs: object) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Opacus' replacement for BatchNorm), as timm calls a norm layer."""
    return nn.GroupNorm(32, num_channels, **kwargs)


@register_model
def resnet18_cifar() -> ModelEntry:
    """Post-activation ResNet-18 (timm ``resnet18``) with a CIFAR stem, for 32x32 inputs."""
    return ModelEntry(
        name="resnet18_cifar", upstream="timm:resnet18",
        factory=_timm_factory("resnet18", adapt=_cifar_stem, zero_init_last=False),
        default_size=32, num_classes=10, norm_kinds=("BatchNorm2d",), has_batchnorm=True,
        description="post-activation ResNet-18, CIFAR stem (3x3 s1 conv, no max-pool)",
    )


@register_model
def resnet18_preact_cifar() -> ModelEntry:
    """Pre-activation ResNet-18 (timm ``resnetv2_18``) with a CIFAR stem, for 32x32 inputs."""
    return ModelEntry(
        name="resnet18_preact_cifar", upstream="timm:resnetv2_18",
        factory=_timm_factory("resnetv2_18", adapt=_cifar_stem_preact, zero_init_last=False),
        default_size=32, num_classes=10, norm_kinds=("BatchNorm2d",), has_batchnorm=True,
        description="pre-activation ResNet-18 (v2), CIFAR stem (3x3 s1 conv, no max-pool)",
    )


@register_model
def resnet18_gn_cifar() -> ModelEntry:
    """Post-activation ResNet-18 with GroupNorm (32 groups) for BatchNorm, CIFAR stem, for 32x32 inputs."""
    return ModelEntry(
        name="resnet18_gn_cifar", upstream="timm:resnet18",
        factory=_timm_factory("resnet18", adapt=_cifar_stem, zero_init_last=False,
                              norm_layer=_group_norm),
        default_size=32, num_classes=10, norm_kinds=(), has_batchnorm=False,
        description="post-activation ResNet-18, GroupNorm(32) for every BatchNorm (what Opacus' ModuleValidator.fix "
                    "makes of it for DP-SGD), CIFAR stem: no running statistics, so no state to calibrate",
    )
