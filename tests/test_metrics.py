"""Tests of giacheck.metrics: SSIM against scikit-image, PSNR, Hungarian matching, the patch-matched score."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from giacheck import metrics
from giacheck.errors import GiacheckError

FAST = settings(max_examples=40, deadline=None)
REFERENCE = {
    "channel_axis": -1,
    "data_range": 1.0,
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
}

unit_floats = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False, width=64)
image_shapes = st.tuples(st.integers(16, 40), st.integers(16, 40), st.sampled_from([1, 3]))


def _random_batch(seed: int, batch: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3))


def _structured_image(size: int = 32) -> np.ndarray:
    """A smooth image with edges: ramps per channel plus a bright square and a dark disc."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    img = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1) * 0.6 + 0.2
    img[size // 8 : size // 2, size // 8 : size // 2] = 0.9
    img[(yy - 0.7) ** 2 + (xx - 0.65) ** 2 < 0.04] = 0.05
    return img


def _shuffle_tiles(img: np.ndarray, patch: int, order: np.ndarray) -> np.ndarray:
    height, width, channels = img.shape
    grid = img.reshape(height // patch, patch, width // patch, patch, channels).transpose(0, 2, 1, 3, 4)
    tiles = grid.reshape(-1, patch, patch, channels)[order]
    return (
        tiles.reshape(height // patch, width // patch, patch, patch, channels)
        .transpose(0, 2, 1, 3, 4)
        .reshape(img.shape)
    )


# --- SSIM -------------------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), shape=image_shapes)
def test_ssim_equals_scikit_image(data: st.DataObject, shape: tuple[int, int, int]) -> None:
    a = data.draw(arrays(np.float64, shape, elements=unit_floats))
    b = data.draw(arrays(np.float64, shape, elements=unit_floats))
    assert metrics.ssim(a, b) == structural_similarity(a, b, **REFERENCE)


@FAST
@given(data=st.data(), shape=image_shapes)
def test_ssim_identity_and_symmetry(data: st.DataObject, shape: tuple[int, int, int]) -> None:
    a = data.draw(arrays(np.float64, shape, elements=unit_floats))
    b = data.draw(arrays(np.float64, shape, elements=unit_floats))
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-12)
    assert -1.0 <= metrics.ssim(a, b) <= 1.0 + 1e-12


def test_ssim_accepts_small_images_float32_and_torch_chw() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(32, 32, 3)), rng.uniform(size=(32, 32, 3))
    expected = structural_similarity(a, b, **REFERENCE)
    ta, tb = torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1)
    assert metrics.ssim(ta, tb) == expected
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert metrics.ssim(a32, b32) == structural_similarity(a32.astype(np.float64), b32.astype(np.float64), **REFERENCE)


# --- PSNR -------------------------------------------------------------------------------------------------


def test_psnr_formula() -> None:
    a, b = np.zeros((16, 16, 3)), np.full((16, 16, 3), 0.1)
    assert metrics.psnr(a, b) == pytest.approx(20.0)  # mse 0.01 -> 10 * log10(1 / 0.01)
    assert metrics.psnr(a, a) == math.inf


@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_psnr_equals_scikit_image(seed: int) -> None:
    a, b = _random_batch(seed, 2)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-12)


# --- matching ---------------------------------------------------------------------------------------------


@st.composite
def batch_and_permutation(draw: st.DrawFn) -> tuple[int, list[int]]:
    size = draw(st.integers(1, 6))
    return size, draw(st.permutations(range(size)))


@FAST
@given(case=batch_and_permutation(), seed=st.integers(0, 2**32 - 1))
def test_match_recovers_every_permutation(case: tuple[int, list[int]], seed: int) -> None:
    size, sigma = case
    orig = _random_batch(seed, size)
    recon = orig[sigma]  # recon[i] = orig[sigma[i]]
    perm = metrics.match(recon, orig)
    np.testing.assert_array_equal(recon[perm], orig)
    np.testing.assert_array_equal(perm, np.argsort(sigma))  # the inverse of sigma, not sigma
    scores = metrics.match_and_score(recon, orig)
    assert scores.perm == tuple(perm.tolist())
    assert scores.ssim == pytest.approx((1.0,) * size, abs=1e-12)
    assert scores.psnr == (math.inf,) * size


def test_match_inverts_a_cycle() -> None:
    orig = _random_batch(1, 3)
    recon = orig[[1, 2, 0]]
    assert metrics.match(recon, orig).tolist() == [2, 0, 1]


@FAST
@given(case=batch_and_permutation(), seed=st.integers(0, 2**32 - 1))
def test_scores_after_matching_equal_scores_in_order(case: tuple[int, list[int]], seed: int) -> None:
    size, sigma = case
    orig = _random_batch(seed, size)
    noisy = np.clip(orig + np.random.default_rng(seed + 1).normal(0, 0.05, orig.shape), 0.0, 1.0)
    scores = metrics.match_and_score(noisy[sigma], orig)
    assert scores.ssim == tuple(metrics.ssim(noisy[j], orig[j]) for j in range(size))
    assert scores.psnr == tuple(metrics.psnr(noisy[j], orig[j]) for j in range(size))
    assert scores.ssim_mean == pytest.approx(np.mean(scores.ssim))
    assert scores.ssim_max == max(scores.ssim)
    assert scores.psnr_mean == pytest.approx(np.mean(scores.psnr))


def test_ssim_matrix_orientation_and_torch_batches() -> None:
    torch = pytest.importorskip("torch")
    orig = _random_batch(2, 3)
    recon = np.clip(orig[[2, 0, 1]] + 0.02, 0.0, 1.0)
    matrix = metrics.ssim_matrix(recon, orig)
    assert matrix.shape == (3, 3)
    assert matrix[0, 1] == metrics.ssim(recon[0], orig[1])
    as_torch = torch.from_numpy(recon).permute(0, 3, 1, 2), torch.from_numpy(orig).permute(0, 3, 1, 2)
    assert metrics.match_and_score(*as_torch) == metrics.match_and_score(recon, orig)


def test_image_scores_is_frozen_slotted_kw_only() -> None:
    scores = metrics.ImageScores(ssim=(0.5, 0.7), psnr=(10.0, 20.0), perm=(1, 0))
    assert (scores.ssim_mean, scores.ssim_max, scores.psnr_mean) == (0.6, 0.7, 15.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores.ssim = (1.0,)  # type: ignore[misc]
    with pytest.raises(TypeError):
        metrics.ImageScores((0.5,), (1.0,), (0,))  # type: ignore[misc]
    assert not hasattr(scores, "__dict__")


def test_metric_definition_records_settings_and_version() -> None:
    import skimage

    definition = metrics.metric_definition()
    assert definition["ssim"]["version"] == skimage.__version__
    assert {k: definition["ssim"][k] for k in REFERENCE} == REFERENCE
    definition["ssim"]["sigma"] = 99
    assert metrics.METRIC_DEFINITION["ssim"]["sigma"] == 1.5


# --- invalid inputs ---------------------------------------------------------------------------------------

_OK = np.full((16, 16, 3), 0.5)
_NAN = _OK.copy()
_NAN[3, 4, 1] = np.nan
_INF = _OK.copy()
_INF[0, 0, 0] = np.inf


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        pytest.param(_OK, np.full((16, 17, 3), 0.5), r"same shape, got \(16, 16, 3\) and \(16, 17, 3\)", id="shape"),
        pytest.param(_NAN, _OK, r"a: expected finite values, got 1 NaN", id="nan"),
        pytest.param(_OK, _INF, r"b: expected finite values, got 0 NaN and 1 infinite", id="inf"),
        pytest.param(_OK - 1.0, _OK, r"a: expected values in \[0, 1\].*got min -0\.5", id="normalized"),
        pytest.param(_OK, _OK * 255, r"b: expected values in \[0, 1\].*max 127\.5", id="255-scale"),
        pytest.param(_OK[..., 0], _OK[..., 0], r"a: expected a 3-D .* got 2-D", id="ndim-2"),
        pytest.param(_OK[None], _OK[None], r"a: expected a 3-D .* got 4-D", id="batch-to-single"),
        pytest.param(np.full((3, 16, 16), 0.5), np.full((3, 16, 16), 0.5), r"1 or 3 channels", id="chw-numpy"),
        pytest.param(np.full((8, 8, 3), 0.5), np.full((8, 8, 3), 0.5), r"at least 11x11 .* got 8x8", id="tiny"),
        pytest.param(np.full((16, 16, 3), 1, np.uint8), _OK, r"a: expected a floating-point .* uint8", id="uint8"),
    ],
)
@pytest.mark.parametrize("function", [metrics.ssim, metrics.psnr])
def test_invalid_single_images(function, a: np.ndarray, b: np.ndarray, match: str) -> None:
    with pytest.raises(GiacheckError, match=match):
        function(a, b)


@pytest.mark.parametrize(
    ("recon", "orig", "match"),
    [
        pytest.param(_OK, _OK, r"recon: expected a 4-D", id="single-to-batch"),
        pytest.param(np.zeros((0, 16, 16, 3)), np.zeros((0, 16, 16, 3)), r"at least one image", id="empty"),
        pytest.param(_OK[None], np.stack([_OK, _OK]), r"recon and orig: expected the same shape", id="batch-size"),
    ],
)
@pytest.mark.parametrize("function", [metrics.ssim_matrix, metrics.match, metrics.match_and_score])
def test_invalid_batches(function, recon: np.ndarray, orig: np.ndarray, match: str) -> None:
    with pytest.raises(GiacheckError, match=match):
        function(recon, orig)


def test_tolerance_admits_float_rounding_just_outside_the_range() -> None:
    assert metrics.ssim(_OK + 0.5 + 5e-7, _OK) < 1.0


# --- patch-matched SSIM (secondary) -----------------------------------------------------------------------


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_patch_matched_ssim_undoes_tile_shuffles(patch: int) -> None:
    img = _structured_image()
    order = np.random.default_rng(patch).permutation((32 // patch) ** 2)
    shuffled = _shuffle_tiles(img, patch, order)
    assert metrics.ssim(shuffled, img) < 0.6
    assert metrics.patch_matched_ssim(shuffled, img, patch=patch) == pytest.approx(1.0, abs=1e-9)


def test_patch_matched_ssim_of_swapped_halves_and_of_noise() -> None:
    img = _structured_image()
    halves = np.concatenate([img[16:], img[:16]])
    assert metrics.ssim(halves, img) < 0.6
    assert metrics.patch_matched_ssim(halves, img, patch=8) == pytest.approx(1.0, abs=1e-9)
    noise = np.random.default_rng(0).uniform(size=img.shape)
    assert metrics.patch_matched_ssim(noise, img, patch=8) < 0.2
    assert metrics.patch_matched_ssim(noise, img, patch=4) < 0.3


def test_patch_matched_ssim_batch_uses_image_matching() -> None:
    orig = np.stack([_structured_image(), np.random.default_rng(3).uniform(size=(32, 32, 3))])
    swap_two_tiles = np.r_[1, 0, 2:16]
    recon = np.stack([_shuffle_tiles(orig[j], 8, swap_two_tiles) for j in (1, 0)])  # images swapped too
    assert metrics.match(recon, orig).tolist() == [1, 0]
    assert metrics.patch_matched_ssim_batch(recon, orig, patch=8) == pytest.approx((1.0, 1.0), abs=1e-9)
    # Forcing the wrong image matching shows the perm argument is honoured.
    assert max(metrics.patch_matched_ssim_batch(recon, orig, patch=8, perm=[0, 1])) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"patch": 2}, r"patch: expected an int >= 4", id="too-small"),
        pytest.param({"patch": 12}, r"divisor of the image height and width, got patch=12 for 32x32", id="divisor"),
        pytest.param({"patch": 8, "perm": [0, 0]}, r"perm: expected a permutation of range\(2\)", id="perm"),
        pytest.param({"patch": 8, "perm": [0.0, 1.0]}, r"perm: expected a permutation", id="float-perm"),
    ],
)
def test_invalid_patch_arguments(kwargs: dict, match: str) -> None:
    batch = np.stack([_structured_image(), _structured_image()])
    with pytest.raises(GiacheckError, match=match):
        metrics.patch_matched_ssim_batch(batch, batch, **kwargs)
