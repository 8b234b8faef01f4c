"""The evidence a verdict rests on: re-identification over a challenge set, worst case, and why a negative failed.

A case runs over a :class:`giacheck.specs.ChallengeSet`: k private images × s attack seeds, one trial each.
Every reconstructed image of every trial is re-identified against a held-out pool (:mod:`giacheck.reid`); the
m p-values are combined by a Bonferroni test at family-wise level α (:func:`giacheck.reid.combined_test`), so
the chance that a case whose
reconstructions carry no information about their images is called *leaking* is at most α. The verdict uses
the most leaking image (smallest p-value, then highest SSIM); every per-image number is kept.

What leaked, as the paper distinguishes it:
- ``semantic``: some image is re-identified by SSIM — a leak;
- ``displaced``: re-identified only by the secondary patch-matched score (content or colour in the wrong
  place), against that score's own chance distribution — reported, not a leak of the image as a whole;
- ``none``.

Why a negative failed (scoring side only, from the attack objective at the true images, :mod:`giacheck.diagnostics`):
*information-limited* when every trial reached an objective at or below the truth's (within
:data:`REACHED_EPSILON` × |truth's|), *attack-limited* when some trial stopped above it, ``unknown`` when the
attack does not expose its objective. SSIM cutoffs are reported columns, never the rule. No torch import.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from giacheck.errors import GiacheckError
from giacheck.jsonio import finite
from giacheck.reid import ALPHA, Reidentification, Test, combined_test

__all__ = ["ALPHA", "REACHED_EPSILON", "Content", "Evidence", "ImageEvidence", "Limitation", "TrialEvidence"]

REACHED_EPSILON = 0.1  # the attack reached the truth's objective: final <= truth * (1 + REACHED_EPSILON)


class Content(StrEnum):
    SEMANTIC = "semantic"
    DISPLACED = "displaced"
    NONE = "none"


class Limitation(StrEnum):
    """Why an attack that does not leak failed."""

    ATTACK = "attack-limited"  # it stopped above the truth's objective: an optimizer failure
    INFORMATION = "information-limited"  # it reached the truth's objective: the update does not determine the image
    UNKNOWN = "unknown"  # the attack does not expose its objective


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageEvidence:
    """One private image of one trial, re-identified against the pool."""

    trial: int
    image: str  # the trial's private image (the first of its batch)
    seed: int
    position: int  # index in the trial's batch
    ssim: float
    rank: int
    pool_size: int
    p_value: float
    z: float
    chance_q95: float
    chance_max: float
    patch_ssim: float | None
    patch_p_value: float | None
    patch_chance_q95: float | None
    null_p_values: tuple[float, ...] = ()  # uniform-noise images re-identified against the same pool

    def valid_at(self, threshold: float) -> bool:
        """The pool is exchangeable enough with this image: no noise image reaches ``threshold``."""
        return all(p > threshold for p in self.null_p_values)

    def to_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.__dataclass_fields__}, "z": finite(self.z),
                "null_p_values": list(self.null_p_values)}


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialEvidence:
    """One attack: its final objective against the truth's."""

    trial: int
    image: str
    seed: int
    objective: float
    truth_objective: float | None

    @property
    def reached(self) -> bool | None:
        """Whether the attack got as low as the truth's objective (within :data:`REACHED_EPSILON`); None: unknown."""
        truth = self.truth_objective
        if truth is None or not math.isfinite(truth) or not math.isfinite(self.objective):
            return None
        return self.objective <= truth + REACHED_EPSILON * abs(truth)

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "image": self.image, "seed": self.seed, "objective": self.objective,
                "truth_objective": self.truth_objective, "reached": self.reached}


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Every trial of one case over its challenge set, and what they establish together."""

    case_id: str
    alpha: float
    images: tuple[ImageEvidence, ...]
    trials: tuple[TrialEvidence, ...]
    selection: str = ""  # how the challenge set was chosen

    @classmethod
    def from_results(cls, case_id: str, results: Sequence[Mapping[str, Any]], *, alpha: float = ALPHA,
                     selection: str = "") -> Evidence:
        """The evidence of ``results`` (``Result.to_dict()`` of each trial, in trial order).

        Raises:
            GiacheckError: no trial, a trial of another case, or a trial without re-identification scores.
        """
        if not results:
            raise GiacheckError(f"{case_id}: no trial ran (the challenge set has no eligible private image in this "
                                "source), so there is no evidence either way")
        images, trials = [], []
        for t, result in enumerate(results):
            if result.get("case_id") != case_id:
                raise GiacheckError(f"trial {t} is of case {result.get('case_id')!r}, not {case_id!r}")
            reid, seed = result.get("reid"), int(result["seed"])
            if not isinstance(reid, Mapping) or not reid.get("per_image"):
                raise GiacheckError(f"{case_id}: trial {t} has no re-identification scores (written by an older "
                                    "giacheck?); rerun the case")
            for position, data in enumerate(reid["per_image"]):
                data = dict(data)
                nulls = tuple(float(p) for p in data.pop("null_p_values", ()))
                r = Reidentification.from_dict(data)  # an infinite z is stored as None
                images.append(ImageEvidence(
                    trial=t, image=str(reid["image"]), seed=seed, position=position, ssim=r.ssim, rank=r.rank,
                    pool_size=r.pool_size, p_value=r.p_value, z=r.z, chance_q95=r.chance_q95,
                    chance_max=r.chance_max, patch_ssim=r.patch_ssim, patch_p_value=r.patch_p_value,
                    patch_chance_q95=r.patch_chance_q95, null_p_values=nulls))
            truth = (result.get("truth") or {}).get("objective")
            trials.append(TrialEvidence(trial=t, image=str(reid["image"]), seed=seed,
                                        objective=float(result["objective"]),
                                        truth_objective=None if truth is None else float(truth)))
        return cls(case_id=case_id, alpha=alpha, images=tuple(images), trials=tuple(trials), selection=selection)

    # -- the tests
    @property
    def test(self) -> Test:
        """Re-identification by SSIM over every image of every trial (Bonferroni at family-wise level α); an
        invalid image (its noise control re-identified) counts as not re-identified."""
        threshold = self.alpha / len(self.images)
        return combined_test([i.p_value if i.valid_at(threshold) else 1.0 for i in self.images], alpha=self.alpha)

    @property
    def invalid(self) -> tuple[ImageEvidence, ...]:
        """Images the pool cannot judge: a uniform-noise image is re-identified as them at the test's threshold."""
        threshold = self.alpha / len(self.images)
        return tuple(i for i in self.images if not i.valid_at(threshold))

    @property
    def patch_test(self) -> Test | None:
        """The same test on the secondary patch-matched score (None when it was not computed)."""
        values = [i.patch_p_value for i in self.images]
        if any(v is None for v in values):
            return None
        return combined_test(values, alpha=self.alpha)  # type: ignore[arg-type]

    @property
    def powerless(self) -> bool:
        """The pool is too small for any image to be significant: 1 / (pool + 1) > α / m for every image. Such
        a challenge set can show no leak, so it can establish no negative either."""
        threshold = self.test.threshold
        return all(1 / (i.pool_size + 1) > threshold for i in self.images)

    @property
    def content(self) -> Content:
        if self.test.significant:
            return Content.SEMANTIC
        patch = self.patch_test
        return Content.DISPLACED if patch is not None and patch.significant else Content.NONE

    @property
    def leaks(self) -> bool:
        """At least one image is re-identified by SSIM at family-wise level α."""
        return self.content is Content.SEMANTIC

    @property
    def worst(self) -> ImageEvidence:
        """The most leaking image: the smallest p-value, then the highest SSIM."""
        return min(self.images, key=lambda i: (i.p_value, -i.ssim))

    @property
    def worst_trial(self) -> int:
        return self.worst.trial

    @property
    def median_ssim(self) -> float:
        return statistics.median(i.ssim for i in self.images)

    @property
    def limitation(self) -> Limitation:
        """Why the attack failed, were it to fail: information-limited only when every trial reached the truth."""
        reached = [t.reached for t in self.trials]
        if any(r is None for r in reached):
            return Limitation.UNKNOWN
        return Limitation.INFORMATION if all(reached) else Limitation.ATTACK

    def ssim_of(self, image: str) -> float:
        """The SSIM of ``image`` (a trial's private image, the first of its batch), the median over seeds."""
        values = [i.ssim for i in self.images if i.image == image and i.position == 0]
        if not values:
            raise GiacheckError(f"{self.case_id}: no trial has private image {image!r}")
        return statistics.median(values)

    @property
    def trial_set(self) -> tuple[str, ...]:
        """``image@seedS`` of every trial, sorted: what a claim and its controls must share."""
        return tuple(sorted(f"{t.image}@seed{t.seed}" for t in self.trials))

    @property
    def trial_images(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.image for t in self.trials))

    def describe(self) -> str:
        """One line: the worst image's numbers, the test, the limitation."""
        w, test = self.worst, self.test
        objective = self.trials[w.trial]
        truth = ("objective at truth n/a" if objective.truth_objective is None else
                 f"objective {objective.objective:.4f} {'≤' if objective.reached else '>'} truth's "
                 f"{objective.truth_objective:.4f} ({self.limitation})")
        return (f"worst image {w.image}#{w.position} (seed {w.seed}): SSIM {w.ssim:.3f}, rank {w.rank}/"
                f"{w.pool_size + 1}, z {w.z:+.1f}, p {w.p_value:.3g} (chance q95 {w.chance_q95:.3f}, max "
                f"{w.chance_max:.3f}); {test.reidentified}/{test.tested} images re-identified at α={test.alpha} "
                f"(p ≤ {test.threshold:.3g}); content {self.content}; {truth}")

    def to_dict(self) -> dict[str, Any]:
        test, patch = self.test, self.patch_test
        worst = self.worst
        return {
            "alpha": self.alpha,
            "set": list(self.trial_set),
            "selection": self.selection,
            "trials": len(self.trials),
            "images": [i.to_dict() for i in self.images],
            "objectives": [t.to_dict() for t in self.trials],
            "tested": test.tested,
            "threshold": test.threshold,
            "reidentified": test.reidentified,
            "patch_reidentified": None if patch is None else patch.reidentified,
            "content": str(self.content),
            "leaks": self.leaks,
            "powerless": self.powerless,
            "invalid": [f"{i.image}#{i.position}@seed{i.seed}" for i in self.invalid],
            "limitation": str(self.limitation),
            "worst": {"image": worst.image, "position": worst.position, "seed": worst.seed, "ssim": worst.ssim,
                      "rank": worst.rank, "pool_size": worst.pool_size, "z": finite(worst.z), "p_value": worst.p_value,
                      "chance_q95": worst.chance_q95, "chance_max": worst.chance_max,
                      "objective": self.trials[worst.trial].objective,
                      "reached": self.trials[worst.trial].reached,
                      "truth_objective": self.trials[worst.trial].truth_objective},
            "max_ssim": max(i.ssim for i in self.images),
            "median_ssim": self.median_ssim,
        }
