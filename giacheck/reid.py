"""Re-identification: is a reconstruction identifiable as its private image, against chance? (scoring side only)

For a reconstruction r of a private image x and a held-out pool P (:func:`giacheck.data.heldout_pool`: views of
images of the same source, disjoint from the client's and the attacker's), the rank of SSIM(r, x) among the
SSIM(r, p), p in P, gives the p-value ``rank / (|P| + 1)``.

Null hypothesis: r carries no information about x (r is independent of x given the pool), and x is exchangeable
with the pool's images. Then the |P| + 1 scores are exchangeable, the rank of x's score is uniform on
1..|P| + 1 (ties counted against x only make it larger), and P(p_value <= t) <= t for every t: the test's
false-positive rate at level alpha is at most alpha. :func:`combined_test` combines m such p-values (images x
seeds x batch) by Bonferroni's rule, whose family-wise false-positive rate is at most alpha whatever the
dependence between them. The smallest p-value a pool can give is 1 / (|P| + 1), so a pool smaller than
:func:`required_pool_size` can never be significant.

The same test runs on the secondary patch-matched score (:func:`giacheck.metrics.patch_matched_ssim`) against
**its own** distribution over the pool: unrelated natural images score about 0.3 on it with 4-px tiles, so its
raw value means nothing alone.

SSIM against the pool is computed here in one vectorized pass (the window, constants and border crop of
:data:`giacheck.metrics.METRIC_DEFINITION`; equal to :func:`giacheck.metrics.ssim` to rounding, about 1e-15),
and the score of x goes through the same arithmetic as the pool's, so an exact copy of x in the pool ties.
Uses ground truth: ``giacheck.attack`` never imports it. No torch import (tensors are accepted as in metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage

from giacheck import metrics
from giacheck.errors import GiacheckError

__all__ = [
    "ALPHA",
    "Reidentification",
    "Test",
    "combined_test",
    "reidentify",
    "reidentify_batch",
    "required_pool_size",
    "smallest_possible_p",
    "ssim_against_many",
]

ALPHA = 0.05  # default significance level of a re-identification test

# metrics.METRIC_DEFINITION's SSIM: Gaussian window sigma 1.5 truncated at 3.5 sigma (11 taps), reflect borders,
# population covariance, data range 1; the mean is taken inside a border of (win_size - 1) / 2 pixels.
_SIGMA, _TRUNCATE = metrics._SSIM_KWARGS["sigma"], 3.5
_PAD = (metrics._WIN_SIZE - 1) // 2
_C1, _C2 = metrics._C1, metrics._C2
_CHUNK_ELEMENTS = 1 << 18  # elements per vectorized pass: 2 MB float64 temporaries stay in cache


# --------------------------------------------------------------------------------------------------------- record
@dataclass(frozen=True, slots=True, kw_only=True)
class Reidentification:
    """One reconstructed image r of one private image x, scored against a held-out pool P.

    Attributes:
        ssim: SSIM(r, x).
        rank: 1 + #{p in P : SSIM(r, p) >= SSIM(r, x)}; ties count against x (conservative).
        pool_size: |P|.
        p_value: rank / (pool_size + 1), the exact one-sided p-value when x is exchangeable with P's images.
        z: (SSIM(r, x) - chance_mean) / std over P (ddof 1); +-inf when that std is 0 (or |P| = 1) and the
            scores differ, 0 when they are equal.
        chance_mean, chance_q95, chance_max: mean, 95th percentile (linear interpolation) and max of SSIM(r, p).
        patch_ssim: secondary score, :func:`giacheck.metrics.patch_matched_ssim` (r, x); None when not computed.
        patch_rank, patch_p_value: the same test on the patch-matched score, against its own pool distribution.
        patch_chance_q95, patch_chance_max: 95th percentile and max of the patch-matched score over P.
    """

    ssim: float
    rank: int
    pool_size: int
    p_value: float
    z: float
    chance_mean: float
    chance_q95: float
    chance_max: float
    patch_ssim: float | None = None
    patch_rank: int | None = None
    patch_p_value: float | None = None
    patch_chance_q95: float | None = None
    patch_chance_max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: every field; a non-finite ``z`` is written as None (JSON has no infinity)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if not math.isfinite(self.z):
            out["z"] = None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reidentification:
        """Inverse of :meth:`to_dict`; a None ``z`` is infinite with the sign of ``ssim - chance_mean``."""
        data = dict(data)
        if "z" in data and data["z"] is None and "ssim" in data and "chance_mean" in data:
            gap = float(data["ssim"]) - float(data["chance_mean"])
            data["z"] = 0.0 if gap == 0 else math.copysign(math.inf, gap)
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        if unknown or missing:
            raise GiacheckError(f"Reidentification: unknown fields {unknown} and missing fields {missing}; "
                                f"valid: {', '.join(names)}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------- input checks
def _check_values(arr: np.ndarray, name: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        raise GiacheckError(f"{name}: expected finite values, got {int(np.isnan(arr).sum())} NaN and "
                            f"{int(np.isinf(arr).sum())} infinite of {arr.size}.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -metrics._RANGE_TOL or hi > 1.0 + metrics._RANGE_TOL:
        raise GiacheckError(f"{name}: expected values in [0, 1], got min {lo:.6g} and max {hi:.6g}; de-normalize "
                            "(x * std + mean) and clamp before scoring.")


def _check_pool(pool: Any, image_shape: tuple[int, ...]) -> np.ndarray:
    p = metrics._to_hwc_numpy(pool, "pool")
    if p.ndim != 4:
        raise GiacheckError(f"pool: expected a 4-D (N, H, W, C) array or (N, C, H, W) tensor, got {p.ndim}-D shape "
                            f"{p.shape}.")
    if p.shape[0] == 0:
        raise GiacheckError(f"pool: expected at least one image, got an empty pool of shape {p.shape}; build one with "
                            "giacheck.data.heldout_pool.")
    if p.shape[1:] != image_shape:
        raise GiacheckError(f"pool: expected images of the reconstruction's shape {image_shape} (channels last), got "
                            f"{p.shape[1:]}; build the pool at the client's resolution.")
    _check_values(p, "pool")
    return p


def _check_patch(patch: int | None, shape: tuple[int, ...]) -> None:
    if patch is not None:
        metrics._check_patch(patch, shape)


# ----------------------------------------------------------------------------------------- vectorized scores
# Only the blurred maps' interior enters SSIM's mean, and there the 11-tap window never reaches the border, so
# the interior is all that is kept of every blurred map.
def _blur(a: np.ndarray) -> np.ndarray:
    """skimage's SSIM filter (Gaussian, sigma 1.5, truncate 3.5, reflect) over H and W of an (N, H, W, C) stack,
    cropped to the interior that SSIM averages."""
    out = ndimage.gaussian_filter(a, sigma=(0, _SIGMA, _SIGMA, 0), truncate=_TRUNCATE, mode="reflect")
    return out[:, _PAD:-_PAD, _PAD:-_PAD, :] if _PAD else out


@dataclass(frozen=True, slots=True)
class _Stats:
    """Filtered mean, squared mean and variance of a stack of images: the part of SSIM that depends on one side."""

    images: np.ndarray  # (N, H, W, C)
    mean: np.ndarray  # interior only, like sq and var
    sq: np.ndarray
    var: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray) -> _Stats:
        mean = _blur(images)
        sq = mean * mean
        return cls(images=images, mean=mean, sq=sq, var=_blur(images * images) - sq)

    def rows(self, part: slice) -> _Stats:
        return _Stats(self.images[part], self.mean[part], self.sq[part], self.var[part])

    def repeat(self, times: int) -> _Stats:
        """The stack repeated ``times`` times, whole: rows k, k + N, k + 2N, ... are row k."""
        def rep(a: np.ndarray) -> np.ndarray:
            return np.tile(a, (times, 1, 1, 1))

        return _Stats(rep(self.images), rep(self.mean), rep(self.sq), rep(self.var))


def _ssim_rows(a: _Stats, b: _Stats) -> np.ndarray:
    """SSIM of a[i] against b[i] for every row (a may hold one image, broadcast against all of b): shape (N,).

    The formula of skimage's structural_similarity, evaluated in place to spare temporaries."""
    prod = a.mean * b.mean
    num = _blur(a.images * b.images)
    num -= prod  # covariance
    num *= 2
    num += _C2
    prod *= 2
    prod += _C1
    num *= prod
    den = a.sq + b.sq
    den += _C1
    spread = a.var + b.var
    spread += _C2
    den *= spread
    num /= den
    return num.reshape(len(num), -1).mean(axis=1)


def _tiles(images: np.ndarray, patch: int) -> np.ndarray:
    """(N, H, W, C) -> (N, T, patch * patch, C) tiles in row-major grid order (metrics._to_tiles per image)."""
    n, height, width, channels = images.shape
    grid = images.reshape(n, height // patch, patch, width // patch, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, -1, patch * patch, channels)


def _untile(tiles: np.ndarray, shape: tuple[int, ...], patch: int) -> np.ndarray:
    """Inverse of :func:`_tiles`: (N, T, patch * patch, C) -> (N, H, W, C)."""
    height, width, channels = shape[-3:]
    grid = tiles.reshape(len(tiles), height // patch, width // patch, patch, patch, channels)
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(len(tiles), height, width, channels)


@dataclass(frozen=True, slots=True)
class _TileStats:
    """Global mean, centred values and variance of each tile of a stack, channels first."""

    tiles: np.ndarray  # (N, T, k, C)
    mean: np.ndarray  # (C, N, T)
    centred: np.ndarray  # (C, N, T, k)
    var: np.ndarray  # (C, N, T)

    @classmethod
    def of(cls, images: np.ndarray, patch: int) -> _TileStats:
        tiles = _tiles(images, patch)
        cnt = np.ascontiguousarray(tiles.transpose(3, 0, 1, 2))
        mean = cnt.mean(axis=-1)
        centred = cnt - mean[..., None]
        return cls(tiles=tiles, mean=mean, centred=centred, var=(centred**2).mean(axis=-1))

    def rows(self, part: slice) -> _TileStats:
        return _TileStats(self.tiles[part], self.mean[:, part], self.centred[:, part], self.var[:, part])


def _tile_ssim(r: _TileStats, o: _TileStats) -> np.ndarray:
    """metrics._tile_ssim_matrix of r's one image against each of o's images, batched: (N, T, T).

    The tile covariances are an einsum, not a BLAS product: OpenBLAS wakes its worker threads for every such
    product, and while pytest-xdist workers hold both cores a 0.2 ms product of a 224 px image took up to 95 ms."""
    channels, _, _, k = o.centred.shape
    out = 0.0
    for c in range(channels):
        cov = np.einsum("tk,nsk->nts", r.centred[c, 0], o.centred[c]) / k
        mr, mo = r.mean[c, 0][:, None], o.mean[c][:, None, :]
        vr, vo = r.var[c, 0][:, None], o.var[c][:, None, :]
        out = out + (2 * mr * mo + _C1) * (2 * cov + _C2) / ((mr**2 + mo**2 + _C1) * (vr + vo + _C2))
    return out / channels


def _matched(r: _TileStats, others: _TileStats, shape: tuple[int, ...], patch: int) -> np.ndarray:
    """r's tiles moved to where they best match each image of ``others`` (patch_matched_ssim's first step):
    (N, H, W, C), N the number of images in ``others``."""
    tiles = r.tiles[0]
    channels, n, count, _ = others.centred.shape
    out = np.empty((n, *tiles.shape), dtype=tiles.dtype)
    step = max(1, _CHUNK_ELEMENTS // (count * count * channels))  # bounds the (step, C, T, T) similarity array
    for lo in range(0, n, step):
        part = slice(lo, min(lo + step, n))
        scores = _tile_ssim(r, others.rows(part))
        for k, matrix in enumerate(scores):
            out[lo + k] = tiles[metrics._perm_from_scores(matrix)]
    return _untile(out, (n, *shape[-3:]), patch)


def _chunks(n: int, image_size: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // image_size)
    return [slice(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _scores(recons: np.ndarray, targets: np.ndarray, pool: np.ndarray,
            patch: int | None) -> tuple[list[tuple[float, np.ndarray]], list[tuple[float, np.ndarray]]]:
    """For each j: SSIM(recons[j], targets[j]) and SSIM(recons[j], p) over the pool; the same for the patch score.

    The pool's own statistics are computed once per chunk for the whole batch; x's score goes through the very
    same row-wise arithmetic as the pool's, so ties are exact.
    """
    n, size, count = len(pool), pool[0].size, len(recons)
    rs, xs = _Stats.of(recons), _Stats.of(targets)
    one = [rs.rows(slice(j, j + 1)) for j in range(count)]
    tiles: list[_TileStats] = []
    if patch is not None:
        recon_tiles = _TileStats.of(recons, patch)
        tiles = [recon_tiles.rows(slice(j, j + 1)) for j in range(count)]
    plain = np.empty((count, n))
    tiled = np.empty((count, n))
    for part in _chunks(n, size * (count if patch is not None else 1)):
        stats = _Stats.of(pool[part])
        for j in range(count):
            plain[j, part] = _ssim_rows(one[j], stats)
        if patch is not None:  # every reconstruction's rearrangements for this chunk in one pass
            pool_tiles = _TileStats.of(pool[part], patch)
            moved = np.concatenate([_matched(t, pool_tiles, pool.shape, patch) for t in tiles])
            tiled[:, part] = _ssim_rows(_Stats.of(moved), stats.repeat(count)).reshape(count, -1)
    values = _ssim_rows(rs, xs)
    plain_out = [(float(values[j]), plain[j]) for j in range(count)]
    if patch is None:
        return plain_out, []
    target_tiles = _TileStats.of(targets, patch)
    moved = np.concatenate(
        [_matched(tiles[j], target_tiles.rows(slice(j, j + 1)), targets.shape, patch) for j in range(count)]
    )
    patch_values = _ssim_rows(_Stats.of(moved), xs)
    return plain_out, [(float(patch_values[j]), tiled[j]) for j in range(count)]


def ssim_against_many(recon: Any, others: Any) -> np.ndarray:
    """SSIM of one image against each of a stack of others, vectorized: ``out[i] = metrics.ssim(recon, others[i])``
    to rounding (about 1e-15).

    Args:
        recon: one image, ``(H, W, C)`` numpy or ``(C, H, W)`` torch, values in [0, 1].
        others: ``(N, H, W, C)`` numpy or ``(N, C, H, W)`` torch, N >= 1, same image shape.

    Raises:
        GiacheckError: as :func:`reidentify`.
    """
    r = metrics._check_inputs(recon, recon, names=("recon", "recon"), batched=False)[0]
    p = _check_pool(others, r.shape)
    out = np.empty(len(p))
    one = _Stats.of(r[None])
    for part in _chunks(len(p), r.size):
        out[part] = _ssim_rows(one, _Stats.of(p[part]))
    return out


# ------------------------------------------------------------------------------------------------------ tests
def _rank(value: float, chance: np.ndarray) -> tuple[int, float]:
    rank = 1 + int(np.count_nonzero(chance >= value))
    return rank, rank / (len(chance) + 1)


def _moments(chance: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (ddof 1; 0 for one value) by exactly rounded sums: independent of pool order."""
    values = chance.tolist()
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _z(value: float, mean: float, std: float) -> float:
    if std == 0.0:
        return 0.0 if value == mean else math.copysign(math.inf, value - mean)
    return (value - mean) / std


def _record(plain: tuple[float, np.ndarray], tiled: tuple[float, np.ndarray] | None) -> Reidentification:
    value, chance = plain
    rank, p_value = _rank(value, chance)
    extra: dict[str, Any] = {}
    if tiled is not None:
        patch_value, patch_chance = tiled
        patch_rank, patch_p = _rank(patch_value, patch_chance)
        extra = {"patch_ssim": patch_value, "patch_rank": patch_rank, "patch_p_value": patch_p,
                 "patch_chance_q95": float(np.quantile(patch_chance, 0.95)),
                 "patch_chance_max": float(patch_chance.max())}
    mean, std = _moments(chance)
    return Reidentification(ssim=value, rank=rank, pool_size=len(chance), p_value=p_value, z=_z(value, mean, std),
                            chance_mean=mean, chance_q95=float(np.quantile(chance, 0.95)),
                            chance_max=float(chance.max()), **extra)


def reidentify(recon: Any, original: Any, pool: Any, *, patch: int | None = None,
               match_colour: bool = True) -> Reidentification:
    """Re-identify one reconstruction of ``original`` against ``pool``: rank, p-value and chance level of its SSIM.

    Null hypothesis: ``recon`` carries no information about ``original``, and ``original`` is exchangeable with
    the pool's images; then P(p_value <= t) <= t for every t.

    Args:
        recon: the reconstructed image, ``(H, W, C)`` numpy or ``(C, H, W)`` torch, values in [0, 1].
        original: the private image it was matched to, same shape.
        pool: held-out images, ``(N, H, W, C)`` numpy or ``(N, C, H, W)`` torch, N >= 1
            (:func:`giacheck.data.heldout_pool`).
        patch: tile side of the secondary patch-matched score (>= 4, dividing H and W); None: skip it. Cost: one
            tile matching per pool image. Against 242-256 pool images on a shared 2-core CPU: 32x32 about 0.07 s
            without it and 0.3 s with patch 4; 224x224 about 4 s without it and 9 s with patch 28.

    Raises:
        GiacheckError: shapes differ, an empty pool, images non-finite or outside [0, 1], or a bad patch size.
    """
    r, x = metrics._check_inputs(recon, original, names=("recon", "original"), batched=False)
    return reidentify_batch(r[None], x[None], pool, patch=patch, match_colour=match_colour)[0]


def recoloured(pool: np.ndarray, original: np.ndarray) -> np.ndarray:
    """``pool`` (N, H, W, C) with each image's per-channel mean and standard deviation set to ``original``'s
    (clipped to [0, 1]): a reconstruction that reproduces only the image's colour statistics no longer stands
    out from such a pool, so what re-identifies is structure, not colour."""
    axes = (1, 2)
    mean, std = pool.mean(axis=axes, keepdims=True), pool.std(axis=axes, keepdims=True)
    target_mean, target_std = original.mean(axis=(0, 1)), original.std(axis=(0, 1))
    scaled = np.where(std > 1e-12, (pool - mean) / np.where(std > 1e-12, std, 1.0), 0.0)
    return np.clip(scaled * target_std + target_mean, 0.0, 1.0)


def reidentify_batch(
    recon: Any, originals: Any, pool: Any, *, patch: int | None = None, match_colour: bool = True
) -> tuple[Reidentification, ...]:
    """Re-identify ``recon[j]``, matched to ``originals[j]``, for each private image j of a batch.

    The matching of reconstructions to originals maximized SSIM to the originals, so the score of ``recon[j]``
    against ``originals[j]`` is compared with each pool image's score against its *best* reconstruction of the
    batch (the maximum over all B): the matched score is at most x_j's own best score, which under the null is
    exchangeable with the pool's, so the p-value stays valid (conservative) for any batch size. With
    ``match_colour`` every pool image first takes x_j's colour statistics (:func:`recoloured`).

    Args:
        recon: ``(B, H, W, C)`` numpy or ``(B, C, H, W)`` torch, matched (e.g. ``recon[ImageScores.perm]``).
        originals: the private images, same shape.
        pool, patch: as in :func:`reidentify`.

    Raises:
        GiacheckError: as :func:`reidentify`, or an empty batch.
    """
    r, x = metrics._check_inputs(recon, originals, names=("recon", "originals"), batched=True)
    p = _check_pool(pool, x.shape[1:])
    _check_patch(patch, x.shape)
    out = []
    for j in range(len(x)):
        pool_j = recoloured(p, x[j]) if match_colour else p
        plain, tiled = _scores(r, np.repeat(x[j:j + 1], len(r), axis=0), pool_j, patch)
        chance = np.max([plain[i][1] for i in range(len(r))], axis=0)
        tiled_j = None
        if tiled:
            tiled_j = (tiled[j][0], np.max([tiled[i][1] for i in range(len(r))], axis=0))
        out.append(_record((plain[j][0], chance), tiled_j))
    return tuple(out)


# ---------------------------------------------------------------------------------------- combining p-values
@dataclass(frozen=True, slots=True, kw_only=True)
class Test:
    """Bonferroni-corrected one-sided test over m re-identification p-values (m = images x seeds x batch).

    Under the null hypothesis for every p-value (no reconstruction carries information about its image), the
    probability that any of them is at or below ``alpha / m`` is at most alpha, whatever their dependence.

    Attributes:
        alpha: family-wise significance level.
        tested: m, the number of p-values.
        threshold: alpha / m.
        reidentified: how many p-values are <= threshold.
        min_p_value: the smallest p-value.
    """

    alpha: float
    tested: int
    threshold: float
    reidentified: int
    min_p_value: float

    @property
    def significant(self) -> bool:
        """At least one image is re-identified at family-wise level alpha."""
        return self.reidentified >= 1


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise GiacheckError(f"alpha: expected a number with 0 < alpha < 1, got {alpha!r}.")
    return float(alpha)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise GiacheckError(f"{name}: expected a positive int, got {value!r}.")
    return int(value)


def combined_test(p_values: Sequence[float], *, alpha: float = ALPHA) -> Test:
    """Bonferroni's test of m re-identification p-values at family-wise level ``alpha``: threshold alpha / m.

    Raises:
        GiacheckError: no p-values, a p-value outside (0, 1] (or not a number), or alpha not in (0, 1).
    """
    alpha = _check_alpha(alpha)
    if isinstance(p_values, (str, bytes)):
        raise GiacheckError(f"p_values: expected a sequence of numbers, got {p_values!r}.")
    values = list(p_values)
    if not values:
        raise GiacheckError("p_values: expected at least one p-value, got none; no image was scored.")
    bad = [v for v in values
           if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < v <= 1]
    if bad:
        raise GiacheckError(f"p_values: expected values in (0, 1] (rank / (pool_size + 1)), got {bad[:5]!r}.")
    threshold = alpha / len(values)
    return Test(alpha=alpha, tested=len(values), threshold=threshold,
                reidentified=sum(1 for v in values if v <= threshold), min_p_value=float(min(values)))


def smallest_possible_p(pool_size: int) -> float:
    """The smallest p-value a pool of ``pool_size`` images can give: 1 / (pool_size + 1) (rank 1)."""
    return 1.0 / (_check_count(pool_size, "pool_size") + 1)


def required_pool_size(tested: int, *, alpha: float = ALPHA) -> int:
    """The smallest pool in which one re-identified image among ``tested`` p-values can be significant at
    family-wise level ``alpha``: the smallest N with 1 / (N + 1) <= alpha / tested (59 for 3 at 0.05).

    Raises:
        GiacheckError: ``tested`` not a positive int, or alpha not in (0, 1).
    """
    tested, alpha = _check_count(tested, "tested"), _check_alpha(alpha)
    threshold = alpha / tested
    n = max(1, math.ceil(tested / alpha) - 1)
    while n > 1 and smallest_possible_p(n - 1) <= threshold:  # the same float comparison as combined_test
        n -= 1
    while smallest_possible_p(n) > threshold:
        n += 1
    return n
