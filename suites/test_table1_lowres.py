"""Paper Table 1 and §4.5.2–4.5.3: ImageNet architectures adapted to 32×32 (stems/tokenization adapted,
depth and width unchanged), bs1, inference mode.

Claims: "adapted low-resolution Swin-T and SwinV2-T are feasible; ViT-B/16, MaxViT-T and ConvNeXt-T are
not", and §4.5.3: the canonical stem fed small images (unadapted) preserves spatial detail that the adapted
model's stem removes, i.e. the unadapted form leaks at least as much.

Negative claims are conclusive only with a positive control under the same budget and pool: the 32×32
inference-mode ResNet-18 (``CONTROL_32``) and, where the suite has one, the same architecture with the enabler
(ConvNeXt-T's unadapted stem, MaxViT-T's inference-mode update). ViT-B/16 and MaxViT-T at 32×32 cost
0.75–1.3 s per iteration on a CPU, so their verdicts come from ``paper``; so does the Swin family's, whose smoke
verdict flips with float rounding (``_claims.SWIN_32_SMOKE``); SwinV2-T failed on both CPUs measured and
stays a strict xfail in smoke. MaxViT-T has BatchNorm: its claim is
about the training-mode update (below).
"""

from __future__ import annotations

import pytest
from _claims import CONTROL_32, STATE, SWIN_32_SMOKE, S

from giacheck.specs import case_id


@pytest.mark.parametrize("model", ["swin_t_cifar", pytest.param("swinv2_t_cifar", marks=pytest.mark.xfail(
    strict=True, reason=(
        "not reproduced in smoke, warm-started, on either CPU measured: no image re-identified — most leaking image "
        "rocket SSIM 0.441, rank 9 of 257 (p 0.035 > 0.025) on an Intel Xeon, 0.426, rank 8 on an AMD EPYC; content "
        "displaced (patch-matched p 0.008), information-limited (objective 0.0009 below the truth's 0.0013); at "
        "random initialization it re-identified rocket at rank 2 (README, model-state table)")))])
def test_adapted_swin_family_feasible(gia, model: str) -> None:
    if model == "swin_t_cifar":
        gia.require_profile("paper", SWIN_32_SMOKE)
    gia.feasible(case_id(model, 32, bn="eval", bs=1, stats="none", state=STATE))


UNADAPTED = f"convnext_t_lowres_unadapted-32-bn_eval-bs1-stats_none{S}"
ADAPTED = f"convnext_t_cifar-32-bn_eval-bs1-stats_none{S}"


@pytest.mark.xfail(strict=True, reason=(
    "inconclusive in smoke, warm-started: no image re-identified (rocket SSIM 0.067, rank 56 of 257; zidane 0.016, "
    "rank 248), but attack-limited on rocket (objective 0.0056 above the truth's 0.0013; zidane reached it), and "
    "the claim needs information-limited; at random initialization rocket was re-identified (0.592, rank 1) although "
    "information-limited (README, model-state table)"))
def test_adapted_convnext_infeasible(gia) -> None:
    """The same-architecture enabler control is ConvNeXt-T with its canonical (unadapted) stem (§4.5.3). The claim
    is that the adapted architecture's update does not determine the image: information-limited."""
    gia.infeasible(ADAPTED, control=CONTROL_32, enabler=UNADAPTED,
                   needs="information-limited")


# MaxViT-T is the one low-resolution model with BatchNorm (in its MBConv blocks), so the client's BN mode is an
# axis here. The paper evaluates "realistic normalization behavior and standard training procedures" (§4) and
# names inference mode an enabler (§4.5.1): its claim is the training-mode update, with the inference-mode update
# of the same network as the enabler control (one smoke-budget `giacheck run` of it reached SSIM 0.760: it leaks).
@pytest.mark.slow
@pytest.mark.parametrize(("model", "bn"), [
    pytest.param("vit_b16_cifar", "eval", id="vit_b16"),
    pytest.param("maxvit_t_cifar", "train", id="maxvit_t-training_mode"),
])
def test_adapted_vit_and_maxvit_infeasible(gia, model: str, bn: str) -> None:
    gia.require_profile("paper", f"{model} costs 0.75-1.3 s per attack iteration on a CPU")
    enabler = case_id(model, 32, bn="eval", bs=1, stats="none", state=STATE) if bn == "train" else None
    gia.infeasible(case_id(model, 32, bn=bn, bs=1, stats="none", state=STATE), control=CONTROL_32, enabler=enabler,
                   needs="attack-limited")


@pytest.mark.slow
def test_adapted_maxvit_inference_mode_update_is_an_enabler(gia) -> None:
    gia.require_profile("paper", "maxvit_t_cifar costs 0.75 s per attack iteration on a CPU")
    gia.ordering(f"maxvit_t_cifar-32-bn_eval-bs1-stats_none{S}", f"maxvit_t_cifar-32-bn_train-bs1-stats_none{S}",
                 margin=0.0)


def test_unadapted_stem_leaks_at_least_as_much(gia) -> None:
    gia.ordering(UNADAPTED, ADAPTED, margin=0.0)
