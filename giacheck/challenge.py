"""A case over its challenge set: one trial per (private image, seed), combined into one verdict's evidence.

The pytest fixture and ``giacheck audit`` both go through :func:`trial_options` and :class:`CaseTrials`, so a
suite, a pack and an audit judge a configuration the same way: on its most leaking image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from giacheck.artifacts import save_pair_png
from giacheck.data import open_source
from giacheck.errors import GiacheckError
from giacheck.jsonio import write_json_atomic
from giacheck.result import Result
from giacheck.specs import ChallengeSet, RunOptions
from giacheck.tasks import get_task
from giacheck.verdicts import ALPHA, Evidence

__all__ = ["Candidate", "CaseTrials", "rank_candidates", "trial_options"]


def trial_options(options: RunOptions, challenge: ChallengeSet, *, num_classes: int = 1000,
                  task: str = "classification") -> list[RunOptions]:
    """One :class:`RunOptions` per trial: ``options`` with each private image of ``challenge`` (for its source and
    the case's task) under each seed. Options that already name an image run that image only (under each seed)."""
    if options.image is not None:
        images: Sequence[str] = (options.image,)
    else:
        source = open_source(options.data, num_classes=num_classes)
        eligible = getattr(get_task(task), "eligible", None)  # a task may restrict private images (boxes)
        available = eligible(source) if eligible else [source.image_name(i) for i in range(len(source))]
        images = challenge.names(options.data, available)
    return [dataclasses.replace(options, image=image, seed=seed) for image in images for seed in challenge.seeds]


@dataclass(frozen=True, slots=True)
class CaseTrials:
    """Every trial of one case, and the evidence they give together."""

    results: tuple[Result, ...]
    evidence: Evidence

    @classmethod
    def of(cls, results: Sequence[Result], *, alpha: float = ALPHA, selection: str = "") -> CaseTrials:
        results = tuple(results)
        if not results:
            raise GiacheckError("no trial to run: the challenge set has no eligible private image in this source "
                                "(a detection case needs images with box annotations)")
        case_id = results[0].case_id
        evidence = Evidence.from_results(case_id, [r.to_dict() for r in results], alpha=alpha, selection=selection)
        return cls(results=results, evidence=evidence)

    @property
    def case_id(self) -> str:
        return self.evidence.case_id

    @property
    def worst(self) -> Result:
        """The trial holding the most leaking image."""
        return self.results[self.evidence.worst_trial]

    def to_dict(self) -> dict[str, Any]:
        """The worst trial's ``Result.to_dict()`` with the whole challenge set's evidence under ``challenge``: the
        form baselines, results files and reports read."""
        return {**self.worst.to_dict(), "challenge": self.evidence.to_dict()}

    def save(self, out_dir: Path) -> dict[str, Path]:
        """``<case-id>.png``: every trial's private images (top) above their reconstructions (bottom), in trial
        order; ``<case-id>.json``: :meth:`to_dict`."""
        out_dir = Path(out_dir)
        original = torch.cat([r.original for r in self.results])
        reconstruction = torch.cat([r.reconstruction for r in self.results])
        return {"png": save_pair_png(original, reconstruction, out_dir / f"{self.case_id}.png"),
                "json": write_json_atomic(self.to_dict(), out_dir / f"{self.case_id}.json")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One candidate private image, as the vulnerable-sample selection saw it: the attack's own numbers only."""

    image: str
    grad_distance: float  # final update distance of a short attack on the reference model
    objective: float


def rank_candidates(reference: str, candidates: Sequence[str], *, profile: str = "smoke", device: str = "cpu",
                    data: str = "bundled", iterations: int = 100, seed: int = 0) -> list[Candidate]:
    """Appendix A's vulnerable-sample selection, without ground truth: attack ``reference`` (a case id) on each
    candidate image for ``iterations`` and rank the candidates by the final update distance, most vulnerable
    (lowest) first. Only the attack's own distance and objective are read; no SSIM is looked at."""
    from giacheck.runner import run_case
    from giacheck.specs import get_profile

    budget = dataclasses.replace(get_profile(profile).attack, iterations=iterations)
    ranked = []
    for image in candidates:
        result = run_case(reference, profile=profile, device=device,
                          options=RunOptions(seed=seed, data=data, budget=budget, image=image))
        ranked.append(Candidate(image=image, grad_distance=result.grad_distance, objective=result.objective))
    return sorted(ranked, key=lambda c: c.grad_distance)
