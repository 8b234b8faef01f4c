"""Tests for giacheck.reid: re-identification against a held-out pool, its false-positive rate, Bonferroni."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from giacheck import metrics
from giacheck.data import BUNDLED_NAMES, heldout_pool, open_source
from giacheck.errors import GiacheckError
from giacheck.reid import (
    ALPHA,
    Reidentification,
    combined_test,
    reidentify,
    reidentify_batch,
    required_pool_size,
    smallest_possible_p,
    ssim_against_many,
)
from giacheck.reid import Test as ReidTest

SIZE = 32


def smooth_images(rng: np.random.Generator, n: int, size: int = SIZE) -> np.ndarray:
    """Random smooth colour images in [0, 1]: Gaussian-blurred noise, contrast-stretched, (n, size, size, 3)."""
    noise = ndimage.gaussian_filter(rng.random((n, size, size, 3)), sigma=(0, 2.0, 2.0, 0))
    return np.clip(0.5 + 5.0 * (noise - 0.5), 0.0, 1.0)


def binomial_bound(rate: float, trials: int) -> float:
    """rate plus three binomial standard errors."""
    return rate + 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


def base_name(view: str) -> str:
    return view[: view.rindex("[")] if view.endswith("]") else view


@pytest.fixture(scope="module")
def bundled():
    return open_source("bundled", num_classes=1000)


VIEWS_USED = 26  # a pool of 256 from 10 remaining images uses views 0..25 of each (view-major order)


@pytest.fixture(scope="module")
def all_views(bundled):
    """Views 0..25 of every bundled image at 32 px, numpy channels last, with names: enough to cut the pool of
    any exclusion of one or two images (heldout_pool's view-major order, filtered)."""
    pool = heldout_pool(bundled, exclude=[], size=SIZE, limit=len(BUNDLED_NAMES) * VIEWS_USED)
    return pool.images.permute(0, 2, 3, 1).double().numpy(), pool.names


def pool_without(all_views, excluded: set[str], limit: int = 256) -> np.ndarray:
    """heldout_pool(exclude=excluded) cut from the all-views pool (the same view-major order, filtered)."""
    images, names = all_views
    keep = [k for k, n in enumerate(names) if base_name(n) not in excluded]
    assert len(keep) >= limit
    return images[keep[:limit]]


# ------------------------------------------------------------------------------------------------- the scores
def test_scores_equal_metrics() -> None:
    rng = np.random.default_rng(1)
    pool, (x, r) = smooth_images(rng, 9), smooth_images(rng, 2)
    reid = reidentify(r, x, pool, patch=4, match_colour=False)
    assert reid.ssim == pytest.approx(metrics.ssim(r, x), abs=1e-12)
    assert reid.patch_ssim == pytest.approx(metrics.patch_matched_ssim(r, x, patch=4), abs=1e-12)
    plain = np.array([metrics.ssim(r, p) for p in pool])
    tiled = np.array([metrics.patch_matched_ssim(r, p, patch=4) for p in pool])
    np.testing.assert_allclose(ssim_against_many(r, pool), plain, rtol=0, atol=1e-12)
    assert reid.rank == 1 + int(np.sum(plain >= reid.ssim)) and reid.pool_size == 9
    assert reid.p_value == reid.rank / 10
    assert reid.patch_rank == 1 + int(np.sum(tiled >= reid.patch_ssim))
    assert reid.chance_mean == pytest.approx(plain.mean(), abs=1e-12)
    assert reid.chance_q95 == pytest.approx(np.quantile(plain, 0.95), abs=1e-12)
    assert reid.chance_max == pytest.approx(plain.max(), abs=1e-12)
    assert reid.z == pytest.approx((reid.ssim - plain.mean()) / plain.std(ddof=1), rel=1e-9)
    assert reid.patch_chance_q95 == pytest.approx(np.quantile(tiled, 0.95), abs=1e-12)
    assert reid.patch_chance_max == pytest.approx(tiled.max(), abs=1e-12)


def test_torch_input_channels_first_gives_the_same_record() -> None:
    rng = np.random.default_rng(2)
    pool, (x, r) = smooth_images(rng, 5), smooth_images(rng, 2)
    as_tensor = lambda a: torch.from_numpy(np.moveaxis(a, -1, -3).copy())  # noqa: E731
    assert reidentify(as_tensor(r), as_tensor(x), as_tensor(pool), patch=8, match_colour=False) == \
        reidentify(r, x, pool, patch=8, match_colour=False)
    a = reidentify(as_tensor(r), as_tensor(x), as_tensor(pool), patch=8)  # recoloured: equal to rounding
    b = reidentify(r, x, pool, patch=8)
    assert (a.rank, a.patch_rank) == (b.rank, b.patch_rank) and a.chance_q95 == pytest.approx(b.chance_q95)
    assert reidentify(r, x, pool).patch_ssim is None


def test_identical_reconstruction_is_rank_one(bundled, all_views) -> None:
    x = bundled.batch([1], SIZE).images[0]  # chelsea, as the client sees it
    pool = pool_without(all_views, {"chelsea"})
    reid = reidentify(x, x, pool, patch=4)
    assert reid.ssim == pytest.approx(1.0) and reid.patch_ssim == pytest.approx(1.0)
    assert reid.rank == 1 and reid.pool_size == 256
    assert reid.p_value == smallest_possible_p(256) == 1 / 257
    assert reid.z > 10 and reid.patch_rank == 1
    # the patch-matched score has its own, higher chance floor; fields ordered sanely
    assert reid.chance_mean <= reid.chance_q95 <= reid.chance_max < 1
    assert reid.patch_chance_q95 <= reid.patch_chance_max < 1
    assert reid.patch_chance_q95 > reid.chance_q95 and reid.patch_chance_q95 > 0.15


def test_ties_count_against_the_private_image() -> None:
    rng = np.random.default_rng(3)
    pool, (x, r) = smooth_images(rng, 6), smooth_images(rng, 2)
    with_copy = np.concatenate([pool, x[None], x[None]])
    reid = reidentify(r, x, with_copy, patch=4)
    assert reid.rank >= 3 and reid.patch_rank >= 3  # both copies of x tie with x
    same = reidentify(x, x, with_copy, patch=4)
    assert (same.rank, same.patch_rank, same.p_value) == (3, 3, 3 / 9)


def test_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(4)
    pool, xs, rs = smooth_images(rng, 7), smooth_images(rng, 3), smooth_images(rng, 3)
    rs[1] = np.clip(xs[1] + 0.1 * rng.standard_normal(xs[1].shape), 0, 1)
    batch = reidentify_batch(rs, xs, pool, patch=4, match_colour=False)
    assert batch[1].rank == 1
    # each pool image is scored against its best reconstruction of the batch (matching chose by SSIM to x)
    best = np.max([[metrics.ssim(r, p) for p in pool] for r in rs], axis=0)
    for j, reid in enumerate(batch):
        assert reid.ssim == pytest.approx(metrics.ssim(rs[j], xs[j]), abs=1e-12)
        assert reid.rank == 1 + int(np.sum(best >= reid.ssim - 1e-12))
    assert reidentify_batch(rs[:1], xs[:1], pool, patch=4) == (reidentify(rs[0], xs[0], pool, patch=4),)


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(range(12)))
def test_record_does_not_depend_on_pool_order(order: list[int]) -> None:
    rng = np.random.default_rng(5)
    pool, (x, r) = smooth_images(rng, 12), smooth_images(rng, 2)
    r = np.clip(0.6 * r + 0.4 * x, 0, 1)  # related to x: a mid rank
    assert reidentify(r, x, pool[order], patch=4) == reidentify(r, x, pool, patch=4)


# ---------------------------------------------------------------------------------------- false-positive rate
# Null draws: the private images x, the pool and the reconstructions r are i.i.d. smooth images, so r carries no
# information about x and x is exchangeable with the pool's images. Each trial re-identifies a batch of 3.
TRIALS = 400


@pytest.fixture(scope="module")
def null_small_pool() -> list[tuple[Reidentification, ...]]:
    """400 trials at 32 px, pool of 19 (p-values on a grid of 1/20), with the patch-matched score (patch 8)."""
    rng = np.random.default_rng(6)
    trials = []
    for _ in range(TRIALS):
        images = smooth_images(rng, 25)
        trials.append(reidentify_batch(images[:3], images[3:6], images[6:], patch=8))
    return trials


@pytest.fixture(scope="module")
def null_large_pool() -> list[tuple[Reidentification, ...]]:
    """400 trials at 16 px (the law does not depend on size), pool of 59 = required_pool_size(3)."""
    rng = np.random.default_rng(7)
    trials = []
    for _ in range(TRIALS):
        images = smooth_images(rng, 65, size=16)
        trials.append(reidentify_batch(images[:3], images[3:6], images[6:]))
    return trials


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_false_positive_rate_under_the_null(alpha: float, null_small_pool) -> None:
    """P(p_value <= alpha) <= alpha, for SSIM and for the patch-matched score (1,200 p-values each)."""
    reids = [r for trial in null_small_pool for r in trial]
    rate = np.mean([r.p_value <= alpha for r in reids])
    patch_rate = np.mean([r.patch_p_value <= alpha for r in reids])
    # measured: 0.048 (SSIM) and 0.046 (patch) at alpha 0.05; 0.198 and 0.173 at alpha 0.2
    assert rate <= binomial_bound(alpha, len(reids)) and patch_rate <= binomial_bound(alpha, len(reids))
    assert all(r.pool_size == 19 and r.p_value in {k / 20 for k in range(1, 21)} for r in reids)


@pytest.mark.parametrize(("alpha", "fixture"), [(0.05, "null_large_pool"), (0.2, "null_small_pool"),
                                                (0.2, "null_large_pool")])
def test_family_wise_rate_of_the_combined_test(alpha: float, fixture: str, request: pytest.FixtureRequest) -> None:
    """Three null re-identifications per trial combined by Bonferroni: P(any significant) <= alpha."""
    trials = request.getfixturevalue(fixture)
    assert trials[0][0].pool_size >= required_pool_size(3, alpha=alpha)
    rate = np.mean([combined_test([r.p_value for r in trial], alpha=alpha).significant for trial in trials])
    # measured: 0.0475 at alpha 0.05 (pool 59); at alpha 0.2, 0.1375 (pool 19: the threshold 0.067 admits only
    # rank 1, p = 0.05, so the rate is 1 - 0.95**3 = 0.143) and 0.195 (pool 59)
    assert rate <= binomial_bound(alpha, len(trials))


def test_unrelated_bundled_reconstructions_are_rarely_reidentified(bundled, all_views) -> None:
    """Real images, real pool: reconstructions that are views of another bundled image (kept out of the pool
    too) or smooth noise, judged against four private images at the Bonferroni threshold of m = 3."""
    images, names = all_views
    rng = np.random.default_rng(8)
    threshold = ALPHA / 3
    tested, hits = 0, 0
    for private in ("astronaut", "chelsea", "retina"):
        x = images[names.index(private)]
        for other in BUNDLED_NAMES:
            if other == private:
                continue
            views = [k for k, v in enumerate(names) if base_name(v) == other][::12]  # full frame and 2 crops
            recon = np.concatenate([images[views], smooth_images(rng, 1)])
            pool = pool_without(all_views, {private, other})
            reids = reidentify_batch(recon, np.broadcast_to(x, recon.shape), pool)
            tested += len(reids)
            hits += sum(r.p_value <= threshold for r in reids)
    # measured: 4 of 132 (3.0 %). Over all 12 private images and every view of every other image (3,432
    # reconstructions) plus 264 smooth-noise ones: 74 of 3,696 (2.0 %; views 2.0 %, noise 2.3 %; the patch-matched
    # score 2.7 %). An exchangeable pool of 256 would give 4/257 = 1.6 % at this threshold (rank <= 4): crops of
    # other images approximate "the same source" closely, not exactly. The bound is the nominal rate times 4.
    assert tested == 3 * 11 * 4
    assert hits / tested <= 4 * threshold


# ----------------------------------------------------------------------------------------------- the record
def test_record_round_trips_through_json() -> None:
    rng = np.random.default_rng(9)
    pool, (x, r) = smooth_images(rng, 4), smooth_images(rng, 2)
    for reid in (reidentify(r, x, pool, patch=4), reidentify(r, x, pool)):
        payload = json.loads(json.dumps(reid.to_dict(), allow_nan=False))
        assert Reidentification.from_dict(payload) == reid
        assert all(isinstance(v, (int, float, type(None))) for v in payload.values())


def test_z_with_no_spread_is_infinite_and_survives_json() -> None:
    rng = np.random.default_rng(10)
    pool, (x, r) = smooth_images(rng, 1), smooth_images(rng, 2)
    one = reidentify(x, x, pool, match_colour=False)  # a pool of one has no standard deviation
    assert one.z == math.inf and one.rank == 1 and one.p_value == 0.5
    assert one.to_dict()["z"] is None
    assert Reidentification.from_dict(json.loads(json.dumps(one.to_dict(), allow_nan=False))) == one
    same = reidentify(r, x, np.stack([x, x]), match_colour=False)  # equal scores: SSIM(r, x) is the pool mean, std 0
    assert same.z == 0.0 and same.rank == 3
    low = reidentify(r, x, np.stack([r, r]), match_colour=False)
    assert low.z == -math.inf and Reidentification.from_dict(low.to_dict()) == low
    with pytest.raises(GiacheckError, match=r"unknown fields \['extra'\]"):
        Reidentification.from_dict({**one.to_dict(), "extra": 1})
    with pytest.raises(GiacheckError, match=r"missing fields \['rank'\]"):
        Reidentification.from_dict({k: v for k, v in one.to_dict().items() if k != "rank"})


# ----------------------------------------------------------------------------------------------- combining
def test_combined_test_arithmetic() -> None:
    test = combined_test([0.01, 0.02, 0.5])
    assert test == ReidTest(alpha=0.05, tested=3, threshold=0.05 / 3, reidentified=1, min_p_value=0.01)
    assert test.significant
    assert not combined_test([0.02, 0.5, 1.0]).significant
    assert combined_test([0.02, 0.03]).reidentified == 1  # threshold 0.05 / 2
    assert combined_test([1 / 60, 1 / 60, 1 / 60]).reidentified == 3  # p exactly at alpha / m counts
    assert combined_test([0.1], alpha=0.2).significant and combined_test([0.2], alpha=0.2).significant
    assert not combined_test([0.21], alpha=0.2).significant


def test_pool_sizes() -> None:
    assert required_pool_size(3) == 59 and required_pool_size(3, alpha=ALPHA) == 59
    assert required_pool_size(1) == 19 and required_pool_size(8) == 159 and required_pool_size(1, alpha=0.5) == 1
    assert smallest_possible_p(59) == 1 / 60 and smallest_possible_p(1) == 0.5
    for tested in range(1, 40):
        for alpha in (0.01, 0.05, 0.1, 0.2):
            n = required_pool_size(tested, alpha=alpha)
            assert combined_test([smallest_possible_p(n)] * tested, alpha=alpha).significant
            if n > 1:
                assert not combined_test([smallest_possible_p(n - 1)] * tested, alpha=alpha).significant


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: combined_test([]), "at least one p-value"),
        (lambda: combined_test([0.0]), r"in \(0, 1\]"),
        (lambda: combined_test([1.5]), r"in \(0, 1\]"),
        (lambda: combined_test([float("nan")]), r"in \(0, 1\]"),
        (lambda: combined_test(["0.1"]), r"in \(0, 1\]"),
        (lambda: combined_test("0.1"), "sequence of numbers"),
        (lambda: combined_test([0.1], alpha=0), "0 < alpha < 1"),
        (lambda: combined_test([0.1], alpha=1.0), "0 < alpha < 1"),
        (lambda: combined_test([0.1], alpha=True), "0 < alpha < 1"),
        (lambda: required_pool_size(0), "tested: expected a positive int"),
        (lambda: required_pool_size(3, alpha=1.5), "0 < alpha < 1"),
        (lambda: smallest_possible_p(0), "pool_size: expected a positive int"),
    ],
)
def test_combining_errors(call, match: str) -> None:
    with pytest.raises(GiacheckError, match=match):
        call()


def test_input_errors() -> None:
    rng = np.random.default_rng(11)
    pool, (x, r) = smooth_images(rng, 3), smooth_images(rng, 2)
    with pytest.raises(GiacheckError, match="same shape"):
        reidentify(r[:16], x, pool)
    with pytest.raises(GiacheckError, match="empty pool"):
        reidentify(r, x, pool[:0])
    with pytest.raises(GiacheckError, match="reconstruction's shape"):
        reidentify(r, x, smooth_images(rng, 3, size=16))
    with pytest.raises(GiacheckError, match="4-D"):
        reidentify(r, x, pool[0])
    with pytest.raises(GiacheckError, match=r"pool: expected values in \[0, 1\]"):
        reidentify(r, x, pool * 2)
    with pytest.raises(GiacheckError, match="pool: expected finite"):
        reidentify(r, x, np.where(pool > 0.5, np.nan, pool))
    with pytest.raises(GiacheckError, match="original: expected values"):
        reidentify(r, x - 1, pool)
    with pytest.raises(GiacheckError, match="patch: expected a divisor"):
        reidentify(r, x, pool, patch=5)
    with pytest.raises(GiacheckError, match="patch: expected an int >= 4"):
        reidentify(r, x, pool, patch=2)
    with pytest.raises(GiacheckError, match="same shape"):
        reidentify_batch(np.stack([r, x]), x[None], pool)
    with pytest.raises(GiacheckError, match="empty batch"):
        reidentify_batch(pool[:0], pool[:0], pool)
    with pytest.raises(GiacheckError, match="floating-point"):
        reidentify(r, x, (pool * 255).astype(np.uint8))


def test_module_imports_no_torch_and_attack_never_imports_it() -> None:
    code = "import sys, giacheck.reid; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0
    from pathlib import Path

    import giacheck

    attack = Path(giacheck.__file__).parent / "attack"
    imports = ("giacheck.reid", "from giacheck import reid", "from .. import reid", "from ..reid")
    assert not [p for p in attack.rglob("*.py") if any(i in p.read_text(encoding="utf-8") for i in imports)]
