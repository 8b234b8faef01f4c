"""Image sources for the harness: bundled samples, ImageFolder trees, CIFAR-10 python batches; deterministic transforms.

Nothing here touches the network. Bundled images are files that ship inside installed wheels (scikit-image's
``skimage/data`` folder and ultralytics' ``assets`` folder); they are located with ``importlib.util.find_spec``
so that neither package is imported (importing ultralytics would change thread settings and write a config
file). User datasets are read from a local path.

Only the client side (``client.py``, ``runner.py``) may use this module: the attack never sees ground truth.
"""

from __future__ import annotations

import abc
import functools
import importlib
import importlib.util
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from giacheck.errors import DatasetError, close_matches

__all__ = [
    "BUNDLED_NAMES",
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "BundledImages",
    "Cifar10Images",
    "ImageBatch",
    "ImageFolderImages",
    "ImageSource",
    "disjoint_pool",
    "load_bundled",
    "open_source",
    "select_batch",
    "to_tensor_resized",
]

log = logging.getLogger("giacheck.data")

# name -> (package whose installed folder holds the file, path inside that package).
# Only RGB colour images (RGBA is composited on white). Left out on purpose: the grayscale images (camera, coins,
# moon, ...), `cat` (the same file as `chelsea`), skimage's `chessboard_RGB.png` (synthetic, no public loader) and
# every image that skimage fetches with pooch (eagle, skin, lily, ...): those are not in the wheel.
_BUNDLED_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "bus": ("ultralytics", "assets/bus.jpg"),
    "zidane": ("ultralytics", "assets/zidane.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "colorwheel": ("skimage", "data/color.png"),
    "logo": ("skimage", "data/logo.png"),
}

#: Bundled sample names in their fixed order (natural photographs first, then scientific and synthetic images).
BUNDLED_NAMES: tuple[str, ...] = tuple(_BUNDLED_FILES)

#: File suffixes an ImageFolder tree may hold (torchvision's list), matched case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: CIFAR-10 class names by label id.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_CIFAR_DIRNAME = "cifar-10-batches-py"
_CIFAR_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_ROW = 3 * 32 * 32

_SPEC_FORMS = "'bundled', 'imagefolder:PATH', 'cifar10:PATH', or a plain PATH (CIFAR-10 if it holds data_batch_1)"

# Errors PIL raises for a file it cannot decode (UnidentifiedImageError and truncated files are OSErrors).
_IMAGE_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# --------------------------------------------------------------------------------------------------------- reading
def _package_dir(package: str) -> Path:
    """Return the installed folder of ``package`` without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"bundled images need the package {package!r}, which is not installed; install it "
            f"(it is a giacheck dependency) or use another image source ({_SPEC_FORMS})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert a PIL image to an (H, W, 3) uint8 array; transparency is composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.array(img.convert("RGB"), dtype=np.uint8)


def _read_image(path: Path) -> np.ndarray:
    """Decode one image file to (H, W, 3) uint8, raising DatasetError that names the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_rgb(img)
    except FileNotFoundError:
        raise DatasetError(
            f"image file {str(path)!r} does not exist (was it removed after the source was opened?)"
        ) from None
    except _IMAGE_READ_ERRORS as exc:
        raise DatasetError(
            f"cannot read image {str(path)!r}: {type(exc).__name__}: {exc}; replace or remove the file"
        ) from exc


@functools.cache
def _read_bundled(name: str) -> np.ndarray:
    """Decode a bundled image once; the cached array is read-only."""
    package, rel = _BUNDLED_FILES[name]
    path = _package_dir(package) / rel
    if not path.is_file():
        raise DatasetError(
            f"bundled image {name!r} should be at {str(path)!r} but is missing from the installed {package} package; "
            f"reinstall {package} or choose another of {', '.join(BUNDLED_NAMES)}"
        )
    arr = _read_image(path)
    arr.setflags(write=False)
    log.debug("loaded bundled image %s %s from %s", name, arr.shape, path)
    return arr


def load_bundled(name: str) -> np.ndarray:
    """Load a bundled sample image as an (H, W, 3) uint8 array, offline.

    Raises:
        DatasetError: ``name`` is not in ``BUNDLED_NAMES`` (the message lists them), or the file is missing.
    """
    if name not in _BUNDLED_FILES:
        raise DatasetError(
            f"unknown bundled image {name!r}; valid names: {', '.join(BUNDLED_NAMES)}."
            + close_matches(name, BUNDLED_NAMES)
        )
    return _read_bundled(name).copy()


# ------------------------------------------------------------------------------------------------------ transforms
def to_tensor_resized(img: np.ndarray, size: int) -> torch.Tensor:
    """Center-crop ``img`` to a square and resize it to (3, size, size) float32 in [0, 1] (bilinear, antialiased).

    Args:
        img: (H, W, 3) uint8 array, or a floating array with values in [0, 1].
        size: output side length in pixels.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DatasetError(f"size must be a positive int, got {size!r}")
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        shape = getattr(img, "shape", type(img).__name__)
        raise DatasetError(f"image must be a non-empty (H, W, 3) numpy array, got {shape}")
    if img.dtype == np.uint8:
        t = torch.from_numpy(img.astype(np.float32)).div_(255.0)  # astype copies: the input is never aliased
    elif np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
            raise DatasetError("a floating image must hold finite values in [0, 1]; convert it or pass uint8")
        t = torch.from_numpy(img.astype(np.float32))
    else:
        raise DatasetError(f"image dtype must be uint8 or floating in [0, 1], got {img.dtype}")
    h, w = t.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    t = t[top : top + side, left : left + side].permute(2, 0, 1).contiguous()
    if side != size:
        t = functional.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return t.clamp_(0.0, 1.0)


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
        """Pixels of image ``i`` as (H, W, 3) uint8."""

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

    Images are listed at construction (sorted, recursively, by suffix in ``IMAGE_EXTENSIONS``) and decoded on demand.
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
        """Decode the image file (grayscale and palette images are converted to RGB)."""
        return _read_image(self._files[self._check_index(i)])

    def __repr__(self) -> str:
        """Readable form."""
        return f"ImageFolderImages({str(self.root)!r})"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays: a CIFAR file cannot run arbitrary code."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the globals that numpy array pickles need."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        if module.startswith("numpy.core."):  # pickles written by numpy 1.x (the original CIFAR files)
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return getattr(importlib.import_module(module), name)


# Errors that unpickling a corrupt or foreign file raises (besides those of the restricted find_class).
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch into (N, 32, 32, 3) uint8 images and (N,) int64 labels.

    The format is a pickled dict (``pickle.load(f, encoding="bytes")``, as the dataset's authors document), so it is
    read with a restricted unpickler that only allows numpy array reconstruction.
    """
    try:
        with path.open("rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _PICKLE_ERRORS as exc:
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r} is not a valid pickled batch ({type(exc).__name__}: {exc}); "
            "re-extract cifar-10-python.tar.gz"
        ) from exc
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        keys = sorted(map(repr, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"CIFAR-10 batch {str(path)!r} must be a dict with keys b'data' and b'labels', got {keys}")
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r}: b'data' must be uint8 of shape (N, {_CIFAR_ROW}), got {shape}"
        )
    try:
        lab = np.asarray(labels)
    except (TypeError, ValueError) as exc:  # ragged or odd objects
        raise DatasetError(f"CIFAR-10 batch {str(path)!r}: b'labels' is not a list of ints ({exc})") from exc
    if lab.shape != (data.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r}: b'labels' must hold {data.shape[0]} ints (one per row of b'data'), "
            f"got {lab.dtype} {lab.shape}"
        )
    if lab.size and (lab.min() < 0 or lab.max() >= len(CIFAR10_CLASSES)):
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r}: labels must lie in 0..{len(CIFAR10_CLASSES) - 1}, "
            f"got {int(lab.min())}..{int(lab.max())}"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R(1024) G(1024) B(1024), row-major
    return np.ascontiguousarray(images), lab.astype(np.int64)


class Cifar10Images(ImageSource):
    """CIFAR-10 python batches (``cifar-10-batches-py``), read on first use and kept in memory.

    ``split="train"`` reads ``data_batch_1..5`` in order, ``"test"`` reads ``test_batch``. ``root`` may be the
    ``cifar-10-batches-py`` folder or its parent.
    """

    def __init__(self, root: str | Path, *, split: Literal["train", "test"] = "train") -> None:
        """Locate the batch files of ``split`` under ``root``; raises DatasetError when any is missing."""
        if split not in _CIFAR_SPLITS:
            raise DatasetError(f"unknown CIFAR-10 split {split!r}; valid: {', '.join(_CIFAR_SPLITS)}")
        root = Path(root).expanduser()
        if not root.is_dir():
            what = "does not exist" if not root.exists() else "is not a directory"
            raise DatasetError(
                f"CIFAR-10 path {str(root)!r} {what}; pass the extracted {_CIFAR_DIRNAME} folder or its parent"
            )
        folder = root / _CIFAR_DIRNAME if (root / _CIFAR_DIRNAME).is_dir() else root
        names = _CIFAR_SPLITS[split]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DatasetError(
                f"CIFAR-10 folder {str(folder)!r} lacks {', '.join(missing)} (split {split!r} needs "
                f"{', '.join(names)}); pass the extracted {_CIFAR_DIRNAME} folder or its parent"
            )
        self.folder = folder
        self.split = split
        self._files = tuple(folder / n for n in names)
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._names: tuple[str, ...] = ()

    def _ensure_loaded(self) -> None:
        """Read all batch files of the split once."""
        if self._images is not None:
            return
        images, labels, names = [], [], []
        for path in self._files:
            x, y = _read_cifar_batch(path)
            images.append(x)
            labels.append(y)
            names.extend(f"{path.name}[{row}]" for row in range(len(y)))
        self._images = np.concatenate(images)
        self._labels = np.concatenate(labels)
        self._names = tuple(names)
        log.debug("CIFAR-10 %s (%s): %d images", self.folder, self.split, len(self._labels))

    @property
    def name(self) -> str:
        """``cifar10:<folder>``."""
        return f"cifar10:{self.folder}"

    @property
    def num_classes(self) -> int:
        """10."""
        return len(CIFAR10_CLASSES)

    @property
    def items(self) -> str:
        """Noun phrase for messages."""
        return f"CIFAR-10 {self.split} images in {str(self.folder)!r}"

    def __len__(self) -> int:
        """Number of images in the split."""
        self._ensure_loaded()
        assert self._labels is not None
        return len(self._labels)

    def label(self, i: int) -> int:
        """The stored CIFAR-10 label (see ``CIFAR10_CLASSES``)."""
        i = self._check_index(i)
        assert self._labels is not None
        return int(self._labels[i])

    def image_name(self, i: int) -> str:
        """``<batch file>[<row>]``, e.g. ``data_batch_1[17]``."""
        return self._names[self._check_index(i)]

    def load(self, i: int) -> np.ndarray:
        """The 32x32 image as (32, 32, 3) uint8."""
        i = self._check_index(i)
        assert self._images is not None
        return self._images[i].copy()

    def __repr__(self) -> str:
        """Readable form."""
        return f"Cifar10Images({str(self.folder)!r}, split={self.split!r})"


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
    source: ImageSource, *, batch_size: int, size: int, offset: int = 0, distinct_labels: bool = True
) -> ImageBatch:
    """Pick the client's batch: the first ``batch_size`` images from ``offset`` on, in source order.

    With ``distinct_labels`` an image whose label already occurs in the batch is skipped, so every label is unique.
    Availability is checked on labels alone, before any pixels are decoded.

    Raises:
        DatasetError: fewer images (or distinct labels) are available than ``batch_size``.
    """
    _check_positive(batch_size, "batch_size")
    _check_positive(size, "size")
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
