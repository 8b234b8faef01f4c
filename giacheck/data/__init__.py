"""Image sources for the harness: bundled samples, ImageFolder trees, CIFAR-10 python batches; deterministic transforms.

Nothing here touches the network. Bundled images are files that ship inside installed wheels (scikit-image's
``skimage/data`` folder and ultralytics' ``assets`` folder); they are located with ``importlib.util.find_spec``
so that neither package is imported (importing ultralytics would change thread settings and write a config
file). User datasets are read from a local path. ``ImageSource.verify()`` decodes every image of a source (or the
named ones) and refuses, in one DatasetError, every file that cannot be used: undecodable, truncated, a decompression
bomb, or a mode with no agreed conversion to RGB (16-bit gray is scaled by its white level, float gray must lie in
[0, 1]).

Only the client side (``client.py``, ``runner.py``) may use this module: the attack never sees ground truth.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from giacheck.data.cifar import _CIFAR_DIRNAME, CIFAR10_CLASSES, Cifar10Images
from giacheck.data.images import _SPEC_FORMS, BUNDLED_NAMES, IMAGE_EXTENSIONS, load_bundled, to_tensor_resized
from giacheck.data.pool import POOL_LIMIT, heldout_pool
from giacheck.data.sources import BundledImages, ImageBatch, ImageFolderImages, ImageSource
from giacheck.errors import DatasetError, close_matches

log = logging.getLogger("giacheck.data")


__all__ = [
    "BUNDLED_NAMES",
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "BundledImages",
    "Cifar10Images",
    "ImageBatch",
    "ImageFolderImages",
    "ImageSource",
    "POOL_LIMIT",
    "disjoint_pool",
    "heldout_pool",
    "load_bundled",
    "open_source",
    "select_batch",
    "to_tensor_resized",
]



# ---------------------------------------------------------------------------------------------------------- opening
def open_source(spec: str, *, num_classes: int) -> ImageSource:
    """Open an image source from a spec string (``bundled``, ``imagefolder:PATH``, ``cifar10:PATH`` or a PATH).

    A plain path is a CIFAR-10 folder if it (or its ``cifar-10-batches-py`` child) holds ``data_batch_1``, otherwise
    an ImageFolder tree.

    Raises:
        DatasetError: unknown scheme, missing or malformed data, or more classes than the model's ``num_classes``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"image source spec must be a non-empty string, got {spec!r}; valid forms: {_SPEC_FORMS}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DatasetError(f"num_classes must be a positive int, got {num_classes!r}")
    spec = spec.strip()
    scheme, sep, rest = spec.partition(":")
    source: ImageSource
    if spec == "bundled":
        source = BundledImages(num_classes)
    elif sep and scheme == "bundled":
        raise DatasetError(f"'bundled' takes no path, got {spec!r}; valid forms: {_SPEC_FORMS}")
    elif sep and scheme == "imagefolder":
        source = ImageFolderImages(_require_path(rest, spec))
    elif sep and scheme == "cifar10":
        source = Cifar10Images(_require_path(rest, spec))
    elif sep and len(scheme) > 1 and scheme.isidentifier():  # "C:\data" is a Windows path, "coco:x" a scheme
        raise DatasetError(
            f"unknown image source scheme {scheme!r} in {spec!r}; valid forms: {_SPEC_FORMS}."
            + close_matches(scheme, ("bundled", "imagefolder", "cifar10"))
        )
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DatasetError(f"image source path {spec!r} does not exist; valid forms: {_SPEC_FORMS}")
        is_cifar = (path / "data_batch_1").is_file() or (path / _CIFAR_DIRNAME / "data_batch_1").is_file()
        source = Cifar10Images(path) if is_cifar else ImageFolderImages(path)
    if source.num_classes > num_classes:
        raise DatasetError(
            f"{source.name} has {source.num_classes} classes but the model has num_classes={num_classes}; "
            "use a model with at least as many classes or a dataset with fewer"
        )
    log.debug("opened image source %s (%d classes)", source.name, source.num_classes)
    return source


def _require_path(rest: str, spec: str) -> str:
    """Return the PATH part of ``scheme:PATH``, rejecting an empty one."""
    if not rest.strip():
        raise DatasetError(f"image source spec {spec!r} has no path after the colon; valid forms: {_SPEC_FORMS}")
    return rest.strip()


# -------------------------------------------------------------------------------------------------------- selection
def _check_positive(value: int, what: str) -> None:
    """Raise DatasetError unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DatasetError(f"{what} must be a positive int, got {value!r}")


def select_batch(
    source: ImageSource, *, batch_size: int, size: int, offset: int = 0, distinct_labels: bool = True,
    first: str | None = None,
) -> ImageBatch:
    """Pick the client's batch: the first ``batch_size`` images from ``offset`` on, in source order.

    With ``first`` (an image name) the batch starts with that image and continues with the images after it in
    source order, wrapping around to the start: one trial of a challenge set, whose batch of 2 shares its first
    image with the batch of 1. With ``distinct_labels`` an image whose label already occurs in the batch is
    skipped, so every label is unique. Availability is checked on labels alone, before any pixels are decoded.

    Raises:
        DatasetError: ``first`` is not an image of the source, or fewer images (or distinct labels) are
            available than ``batch_size``.
    """
    _check_positive(batch_size, "batch_size")
    _check_positive(size, "size")
    if first is not None:
        return _batch_from(source, first, batch_size=batch_size, size=size, distinct_labels=distinct_labels)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise DatasetError(f"offset must be an int >= 0, got {offset!r}")
    n = len(source)
    available = max(n - offset, 0)
    at = f" from offset {offset}" if offset else ""
    if batch_size > available:
        valid = f"1..{available}" if available else f"none (lower the offset below {n})"
        raise DatasetError(
            f"batch size {batch_size} requested but only {available} {source.items} are available{at}; valid: {valid}"
        )
    if not distinct_labels:
        return source.batch(range(offset, offset + batch_size), size)
    chosen: list[int] = []
    seen: set[int] = set()
    for i in range(offset, n):
        lab = source.label(i)
        if lab not in seen:
            seen.add(lab)
            chosen.append(i)
            if len(chosen) == batch_size:
                return source.batch(chosen, size)
    raise DatasetError(
        f"batch size {batch_size} requested with distinct labels but only {len(chosen)} distinct labels occur among "
        f"the {available} {source.items}{at}; valid: 1..{len(chosen)}, or pass distinct_labels=False"
    )


def _batch_from(source: ImageSource, first: str, *, batch_size: int, size: int, distinct_labels: bool) -> ImageBatch:
    names = [source.image_name(i) for i in range(len(source))]
    if first not in names:
        raise DatasetError(f"private image {first!r} is not an image of {source.name}; valid: "
                           f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}" + close_matches(first, names))
    start = names.index(first)
    order = [(start + k) % len(names) for k in range(len(names))]
    chosen: list[int] = []
    seen: set[int] = set()
    for i in order:
        lab = source.label(i)
        if not distinct_labels or lab not in seen:
            seen.add(lab)
            chosen.append(i)
            if len(chosen) == batch_size:
                return source.batch(chosen, size)
    raise DatasetError(f"batch size {batch_size} requested but only {len(chosen)} images"
                       f"{' with distinct labels' if distinct_labels else ''} are available in {source.name}; "
                       f"valid: 1..{len(chosen)}")


def disjoint_pool(source: ImageSource, *, exclude: Sequence[int] | Sequence[str], count: int, size: int) -> ImageBatch:
    """Auxiliary images for the attacker: the first ``count`` images of ``source`` not in ``exclude``, in order.

    Args:
        exclude: the client's images, as source indices or as image names (e.g. ``client_batch.names``).

    Raises:
        DatasetError: an excluded index or name is not in the source, or fewer than ``count`` images remain.
    """
    _check_positive(count, "count")
    _check_positive(size, "size")
    n = len(source)
    if isinstance(exclude, str):
        raise DatasetError(f"exclude must be a sequence of indices or names, got the string {exclude!r}")
    excl = list(exclude)
    if all(isinstance(e, str) for e in excl):
        index_of = {source.image_name(i): i for i in range(n)}
        unknown = [e for e in excl if e not in index_of]
        if unknown:
            raise DatasetError(f"exclude names {unknown} are not images of {source.name}")
        banned = {index_of[e] for e in excl}
    elif all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in excl):
        banned = {source._check_index(int(e)) for e in excl}
    else:
        raise DatasetError("exclude must hold only indices (int) or only image names (str), not a mix")
    remaining = [i for i in range(n) if i not in banned]
    if count > len(remaining):
        raise DatasetError(
            f"{count} auxiliary images requested but only {len(remaining)} {source.items} remain after excluding "
            f"{len(banned)}; valid: 1..{len(remaining)}"
        )
    return source.batch(remaining[:count], size)
