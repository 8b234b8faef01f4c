"""Image sources: the :class:`ImageSource` interface, the bundled samples and ImageFolder trees."""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from giacheck.data.images import (
    BUNDLED_NAMES,
    IMAGE_EXTENSIONS,
    _image_problem,
    _pixel_problem,
    _problems_message,
    _read_image,
    load_bundled,
    to_tensor_resized,
)
from giacheck.errors import DatasetError, close_matches

log = logging.getLogger("giacheck.data")

# ---------------------------------------------------------------------------------------------------------- batches
@dataclass(frozen=True, slots=True, kw_only=True)
class ImageBatch:
    """Ground-truth client images with their labels and stable per-image names."""

    images: torch.Tensor  # (B, 3, S, S) float in [0, 1]
    labels: torch.Tensor  # (B,) int64
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        """Check that images, labels and names agree."""
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DatasetError(f"images must be (B, 3, S, S), got {tuple(self.images.shape)}")
        b = self.images.shape[0]
        if self.labels.shape != (b,) or self.labels.dtype != torch.int64:
            raise DatasetError(
                f"labels must be an int64 tensor of shape ({b},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.names) != b:
            raise DatasetError(f"names must hold {b} entries (one per image), got {len(self.names)}")

    @property
    def batch_size(self) -> int:
        """Number of images B."""
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Side length S of the square images."""
        return int(self.images.shape[-1])


class ImageSource(abc.ABC):
    """An indexable, deterministic collection of labelled RGB images."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The source's spec string, e.g. ``bundled`` or ``cifar10:/data/cifar-10-batches-py``."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of label ids the source may use (labels lie in ``0..num_classes-1``)."""

    @property
    @abc.abstractmethod
    def items(self) -> str:
        """Plural noun phrase for error messages, e.g. ``bundled images``."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def label(self, i: int) -> int:
        """Class id of image ``i`` (cheap: never decodes pixels)."""

    @abc.abstractmethod
    def image_name(self, i: int) -> str:
        """Stable, unique name of image ``i``."""

    @abc.abstractmethod
    def load(self, i: int) -> np.ndarray:
        """Pixels of image ``i`` as (H, W, 3) uint8, or float32 in [0, 1] for an image of more than 8 bits."""

    def verify(self, names: Sequence[str] | None = None) -> None:
        """Decode every image (or the images named in ``names``) now, so that one that cannot be used is refused
        before any compute rather than when its batch loads.

        Args:
            names: image names (``image_name``) to check; None checks every image of the source.

        Raises:
            DatasetError: listing every image that cannot be used with why (the first 20 named, the rest counted),
                or naming an entry of ``names`` that is not an image of the source.
        """
        indices = self._indices_of(names)
        problems = [(self.image_name(i), reason) for i in indices if (reason := self._problem(i)) is not None]
        if problems:
            raise DatasetError(_problems_message(self.items, len(indices), problems))
        log.debug("verified %d %s", len(indices), self.items)

    def _problem(self, i: int) -> str | None:
        """Why image ``i`` cannot be used, or None (decodes it)."""
        try:
            return _pixel_problem(self.load(i))
        except DatasetError as exc:
            return str(exc)

    def _indices_of(self, names: Sequence[str] | None) -> list[int]:
        """Indices of the images named in ``names`` (all images for None), in source order."""
        n = len(self)
        if names is None:
            return list(range(n))
        if isinstance(names, str) or not all(isinstance(name, str) for name in names):
            raise DatasetError(f"names must be a sequence of image names (str), got {names!r}; pass e.g. "
                               "ImageBatch.names, or None for every image")
        index_of = {self.image_name(i): i for i in range(n)}
        unknown = [name for name in names if name not in index_of]
        if unknown:
            shown = ", ".join(list(index_of)[:12]) + (", ..." if n > 12 else "")
            raise DatasetError(f"names {unknown} are not images of {self.name}; valid names: {shown}."
                               + close_matches(unknown[0], index_of))
        return sorted({index_of[name] for name in names})

    def _check_index(self, i: int) -> int:
        """Return ``i`` if it is a valid index, else raise DatasetError."""
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
            raise DatasetError(f"image index {i!r} is out of range for {self.name}; valid: 0..{n - 1}")
        return int(i)

    def batch(self, indices: Sequence[int], size: int) -> ImageBatch:
        """Load the images at ``indices`` (distinct, in the given order) as an ImageBatch of side ``size``."""
        idx = [self._check_index(i) for i in indices]
        if not idx:
            raise DatasetError(f"no image indices given for {self.name}; pass at least one")
        if len(set(idx)) != len(idx):
            raise DatasetError(f"image indices must be distinct, got {idx}")
        images = torch.stack([to_tensor_resized(self.load(i), size) for i in idx])
        labels = torch.tensor([self.label(i) for i in idx], dtype=torch.int64)
        return ImageBatch(images=images, labels=labels, names=tuple(self.image_name(i) for i in idx))


class BundledImages(ImageSource):
    """The bundled sample images, in ``BUNDLED_NAMES`` order.

    Label of image ``i`` is ``i % num_classes``: a fixed, arbitrary class id (not a semantic ImageNet label) that is
    distinct for the first ``num_classes`` images.
    """

    def __init__(self, num_classes: int) -> None:
        """Create the source for a model with ``num_classes`` outputs."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise DatasetError(f"num_classes must be a positive int, got {num_classes!r}")
        self._num_classes = num_classes

    @property
    def name(self) -> str:
        """``bundled``."""
        return "bundled"

    @property
    def num_classes(self) -> int:
        """The model's class count given at construction."""
        return self._num_classes

    @property
    def items(self) -> str:
        """``bundled images``."""
        return "bundled images"

    def __len__(self) -> int:
        """Number of bundled images."""
        return len(BUNDLED_NAMES)

    def label(self, i: int) -> int:
        """``i % num_classes``."""
        return self._check_index(i) % self._num_classes

    def image_name(self, i: int) -> str:
        """The bundled name, e.g. ``astronaut``."""
        return BUNDLED_NAMES[self._check_index(i)]

    def load(self, i: int) -> np.ndarray:
        """Decode the bundled image."""
        return load_bundled(self.image_name(i))

    def __repr__(self) -> str:
        """Readable form."""
        return f"BundledImages(num_classes={self._num_classes})"


class ImageFolderImages(ImageSource):
    """A torchvision-style ImageFolder tree ``root/<class>/**/<image>``; sorted class folder names map to ids 0..K-1.

    Images are listed at construction (sorted, recursively, by suffix in ``IMAGE_EXTENSIONS``) and decoded on demand;
    :meth:`verify` decodes them all up front, so that a file that cannot be used is refused before any compute.
    """

    def __init__(self, root: str | Path) -> None:
        """Index the tree at ``root``; raises DatasetError for a missing or empty tree."""
        root = Path(root).expanduser()
        if not root.exists():
            raise DatasetError(
                f"ImageFolder path {str(root)!r} does not exist; pass a folder holding one folder per class"
            )
        if not root.is_dir():
            raise DatasetError(
                f"ImageFolder path {str(root)!r} is not a directory; pass a folder holding one folder per class"
            )
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DatasetError(
                f"ImageFolder {str(root)!r} has no class folders; expected {root}/<class>/<image>"
                f"{{{','.join(IMAGE_EXTENSIONS)}}}"
            )
        files: list[Path] = []
        labels: list[int] = []
        empty: list[str] = []
        for cid, cls in enumerate(classes):
            found = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                empty.append(cls)
            files.extend(found)
            labels.extend([cid] * len(found))
        if not files:
            raise DatasetError(
                f"ImageFolder {str(root)!r} has class folders ({', '.join(classes)}) but no images with suffix in "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        if empty:
            raise DatasetError(
                f"ImageFolder {str(root)!r}: class folder(s) {', '.join(empty)} hold no images with suffix in "
                f"{', '.join(IMAGE_EXTENSIONS)}; add images or remove the folder(s) (class ids come from all folders)"
            )
        self.root = root
        self.classes: tuple[str, ...] = tuple(classes)
        self._files = tuple(files)
        self._labels = tuple(labels)
        log.debug("ImageFolder %s: %d images in %d classes", root, len(files), len(classes))

    @property
    def name(self) -> str:
        """``imagefolder:<root>``."""
        return f"imagefolder:{self.root}"

    @property
    def num_classes(self) -> int:
        """Number of class folders."""
        return len(self.classes)

    @property
    def items(self) -> str:
        """Noun phrase for messages."""
        return f"images in ImageFolder {str(self.root)!r}"

    def __len__(self) -> int:
        """Number of image files."""
        return len(self._files)

    def label(self, i: int) -> int:
        """Index of the image's class folder in sorted order."""
        return self._labels[self._check_index(i)]

    def image_name(self, i: int) -> str:
        """Path relative to the root, with forward slashes (``class_x/img.png``)."""
        return self._files[self._check_index(i)].relative_to(self.root).as_posix()

    def load(self, i: int) -> np.ndarray:
        """Decode the image file: 8-bit modes (gray, palette, CMYK, with alpha composited on white) become RGB uint8,
        16-bit and float gray become RGB float32 in [0, 1]; any other file is refused (``images.VALID_IMAGES``)."""
        return _read_image(self._files[self._check_index(i)])

    def _problem(self, i: int) -> str | None:
        """Why the image file cannot be used, or None (a file unchanged since it last decoded is not decoded again)."""
        return _image_problem(self._files[i])

    def __repr__(self) -> str:
        """Readable form."""
        return f"ImageFolderImages({str(self.root)!r})"


