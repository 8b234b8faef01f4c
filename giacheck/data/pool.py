"""The held-out pool that re-identification judges a reconstruction against (scoring side only).

A reconstruction is *identifiable* when it is closer to its private image than to images of the same source that
it was never derived from (:mod:`giacheck.reid`). The pool holds *views* of the source's images other than the
client's and the attacker's auxiliary ones. A view of an image is one of 42 fixed pictures cut from it:

- the full frame (centre-cropped to a square and resized exactly as the client's images are,
  :func:`giacheck.data.images.to_tensor_resized`) and its horizontal flip;
- square crops of side 0.85, 0.7, 0.55 and 0.4 of the shorter side, at the four corners (``tl``, ``tr``,
  ``bl``, ``br``) and the centre (``c``), each resized to the same size by the same function, and each with
  its horizontal flip.

A flip is the mirror image of the resized view (the client's preprocessing, mirrored). The 12 bundled images
alone are too few and too varied to give a chance level, so crops of other images stand in for "further images
of the same source": an approximation (a crop is more zoomed-in than a client image, and the views of one image
resemble each other more than independent images would). A user's dataset (``--data``) contributes its other
images the same way; a large dataset needs no crops at all to fill the pool, but gets them by the same rule.

With 42 views an image, a batch of 8 drawn from the 12 bundled images leaves 4 images, 168 views, enough for one
image in 8 to be significant at family-wise α = 0.05 after the Bonferroni correction
(:func:`giacheck.reid.required_pool_size`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from giacheck.data.images import to_tensor_resized
from giacheck.data.sources import ImageBatch, ImageSource
from giacheck.errors import DatasetError, close_matches

__all__ = ["POOL_LIMIT", "VIEWS_PER_IMAGE", "heldout_pool", "view_names"]

log = logging.getLogger("giacheck.data")

POOL_LIMIT = 256  # default largest pool: SSIM of one reconstruction against 256 views takes well under 1 s at 32 px
_SCALES = (0.85, 0.7, 0.55, 0.4)
_PLACES = ("tl", "tr", "bl", "br", "c")
# The 20 crops in an order whose every prefix is spread over both scales and places: crop k has scale k mod 4 and
# place k mod 5 (4 and 5 are coprime, so k = 0..19 meets every pair once).
_CROPS: tuple[tuple[float, str], ...] = tuple((_SCALES[k % 4], _PLACES[k % 5]) for k in range(20))
# An image's views in a fixed order: (crop or None for the full frame, flipped); flips of crops come last.
_VIEWS: tuple[tuple[tuple[float, str] | None, bool], ...] = (
    (None, False), (None, True), *((c, False) for c in _CROPS), *((c, True) for c in _CROPS),
)
#: Number of views each pool image contributes (before ``limit`` cuts the pool).
VIEWS_PER_IMAGE = len(_VIEWS)


def _view_name(image: str, view: tuple[tuple[float, str] | None, bool]) -> str:
    crop, flip = view
    tags = ([] if crop is None else [f"crop{crop[0]:g}-{crop[1]}"]) + (["flip"] if flip else [])
    return f"{image}[{','.join(tags)}]" if tags else image


def view_names(image: str) -> list[str]:
    """The names of an image's views in their fixed order: ``chelsea``, ``chelsea[flip]``,
    ``chelsea[crop0.85-tl]``, ... ``chelsea[crop0.4-c,flip]``."""
    return [_view_name(image, v) for v in _VIEWS]


def _crop_box(h: int, w: int, scale: float, place: str) -> tuple[int, int, int]:
    """Top, left and side of a square crop of ``scale`` times the shorter side at ``place``."""
    side = max(1, round(min(h, w) * scale))
    top = {"tl": 0, "tr": 0, "bl": h - side, "br": h - side, "c": (h - side) // 2}[place]
    left = {"tl": 0, "tr": w - side, "bl": 0, "br": w - side, "c": (w - side) // 2}[place]
    return top, left, side


def _render(img: np.ndarray, crop: tuple[float, str] | None, size: int) -> torch.Tensor:
    """The unflipped view ``crop`` (None: the full frame) of a decoded (H, W, 3) image, (3, size, size) in [0, 1]."""
    if crop is not None:
        top, left, side = _crop_box(img.shape[0], img.shape[1], *crop)
        img = img[top : top + side, left : left + side]
    return to_tensor_resized(np.ascontiguousarray(img), size)


def _check_positive(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DatasetError(f"{what} must be a positive int, got {value!r}")
    return value


def heldout_pool(source: ImageSource, *, exclude: Sequence[str], size: int, limit: int = POOL_LIMIT) -> ImageBatch:
    """The re-identification pool: views of every image of ``source`` not named in ``exclude``, at most ``limit``.

    Order (one rule whether or not ``limit`` cuts): view-major. First the full frame of every remaining image in
    source order, then every image's flip, then crop 1 of every image, crop 2 of every image, ... (the crop order
    spreads every prefix over scales and places; flipped crops come last). The pool is the first ``limit`` views
    of that order, so a smaller limit gives a prefix of a larger one, every image's full frame is kept whenever
    ``limit`` is at least the number of images, and no image gets two more views than another. Names are the
    image's name with the view in brackets (``chelsea``, ``chelsea[flip]``, ``chelsea[crop0.55-tl,flip]``);
    labels are those of the images the views come from. Only images that contribute a view are decoded;
    excluded images never are.

    Args:
        source: the client's image source.
        exclude: names of the client's images and of every auxiliary image the attacker used
            (``ImageBatch.names``); none of their views enters the pool.
        size: side of the square views in pixels (the client's resolution).
        limit: the largest number of views.

    Returns:
        An ImageBatch of shape (N, 3, size, size), float32 in [0, 1], N = min(limit, 42 x remaining images).

    Raises:
        DatasetError: ``exclude`` is a string or names an image that is not in the source, no image is left after
            excluding, or ``size`` / ``limit`` is not a positive int.
    """
    _check_positive(size, "size")
    _check_positive(limit, "limit")
    if isinstance(exclude, str):
        raise DatasetError(f"exclude must be a sequence of image names, got the string {exclude!r}; wrap it in a list")
    excluded = list(exclude)
    bad = [e for e in excluded if not isinstance(e, str)]
    if bad:
        raise DatasetError(f"exclude must hold image names (str), got {bad[:5]!r}; pass e.g. ImageBatch.names")
    names = [source.image_name(i) for i in range(len(source))]
    known = set(names)
    unknown = [e for e in excluded if e not in known]
    if unknown:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise DatasetError(
            f"exclude names {unknown} are not images of {source.name}; valid names: {shown}."
            + close_matches(unknown[0], names)
        )
    banned = set(excluded)
    kept = [i for i, name in enumerate(names) if name not in banned]
    if not kept:
        raise DatasetError(
            f"no image of {source.name} is left for a held-out pool: all {len(names)} {source.items} are the "
            f"client's or the attacker's ({len(banned)} excluded); valid: a source with at least one image "
            "beyond those, e.g. a smaller batch, fewer auxiliary images, or a larger --data set"
        )
    order = [(v, i) for v in range(VIEWS_PER_IMAGE) for i in kept][:limit]
    decoded: dict[int, np.ndarray] = {}
    rendered: dict[tuple[int, tuple[float, str] | None], torch.Tensor] = {}  # a flip mirrors its unflipped view
    tensors = []
    for v, i in order:
        crop, flip = _VIEWS[v]
        if (i, crop) not in rendered:
            if i not in decoded:
                decoded[i] = source.load(i)
            rendered[i, crop] = _render(decoded[i], crop, size)
        tensors.append(rendered[i, crop].flip(-1) if flip else rendered[i, crop])
    log.debug("held-out pool of %d views from %d %s (%d excluded)", len(order), len(decoded), source.items,
              len(banned))
    return ImageBatch(
        images=torch.stack(tensors),
        labels=torch.tensor([source.label(i) for _, i in order], dtype=torch.int64),
        names=tuple(_view_name(names[i], _VIEWS[v]) for v, i in order),
    )
