"""ResNet-18 post- and pre-activation (timm) with a CIFAR stem: 3x3 stride-1 conv, no max-pool.

``zero_init_last=False`` on purpose: timm's default zero-initializes the last BatchNorm gamma of every
residual block, so at random initialization each block is the identity on its residual branch, the update
carries almost no information about the input, and the attack fails (SSIM ~0.1 vs 0.84 on the positive
control, DESIGN §9). The paper's models were randomly initialized without that trick.
"""

from __future__ import annotations

from torch import nn

from giacheck.models.registry import ModelEntry, register_model


def _timm_resnet(upstream: str, preact: bool) -> nn.Module:
    import timm

    def factory(resolution: int, num_classes: int) -> nn.Module:
        net = timm.create_model(upstream, pretrained=False, num_classes=num_classes, zero_init_last=False)
        conv = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if preact:
            net.stem.conv, net.stem.pool = conv, nn.Identity()
        else:
            net.conv1, net.maxpool = conv, nn.Identity()
        return net

    return factory


@register_model
def resnet18_cifar(**overrides: object) -> ModelEntry:
    """Post-activation ResNet-18 (timm ``resnet18``) with a CIFAR stem, for 32x32 inputs."""
    return ModelEntry(
        name="resnet18_cifar", upstream="timm:resnet18", factory=_timm_resnet("resnet18", preact=False),
        default_size=32, num_classes=10, norm_kinds=("BatchNorm2d",), has_batchnorm=True,
        description="post-activation ResNet-18, CIFAR stem (3x3 s1 conv, no max-pool)", **overrides,
    )


@register_model
def resnet18_preact_cifar(**overrides: object) -> ModelEntry:
    """Pre-activation ResNet-18 (timm ``resnetv2_18``) with a CIFAR stem, for 32x32 inputs."""
    return ModelEntry(
        name="resnet18_preact_cifar", upstream="timm:resnetv2_18",
        factory=_timm_resnet("resnetv2_18", preact=True),
        default_size=32, num_classes=10, norm_kinds=("BatchNorm2d",), has_batchnorm=True,
        description="pre-activation ResNet-18 (v2), CIFAR stem (3x3 s1 conv, no max-pool)", **overrides,
    )
