"""CIFAR-10 python batches, read without arbitrary pickles."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np

from giacheck.data.sources import ImageSource
from giacheck.errors import DatasetError

log = logging.getLogger("giacheck.data")

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


# Errors that unpickling a corrupt, truncated or foreign file raises (besides those of the restricted find_class):
# MemoryError for a length field far beyond the file, LookupError for an unknown codec name, RecursionError for
# deep nesting.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    LookupError,
    MemoryError,
    RecursionError,
)
_VALID_BATCH = (f"valid: a pickled dict with b'data' (uint8, shape (N, {_CIFAR_ROW}), N >= 1, rows R G B planes of "
                "32x32) and b'labels' (N ints in 0..9), as in cifar-10-python.tar.gz")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch into (N, 32, 32, 3) uint8 images and (N,) int64 labels.

    The format is a pickled dict (``pickle.load(f, encoding="bytes")``, as the dataset's authors document), so it is
    read with a restricted unpickler that only allows numpy array reconstruction.
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"cannot open CIFAR-10 batch {str(path)!r} ({type(exc).__name__}: {exc}); "
                           "make it a readable file") from exc
    try:
        with f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _PICKLE_ERRORS as exc:
        detail = str(exc) or ("a length field larger than memory" if isinstance(exc, MemoryError) else "no detail")
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r} is not a valid pickled batch (truncated, corrupt or foreign: "
            f"{type(exc).__name__}: {detail}); {_VALID_BATCH}; re-extract cifar-10-python.tar.gz"
        ) from exc
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        keys = sorted(map(repr, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"CIFAR-10 batch {str(path)!r} must be a dict with keys b'data' and b'labels', got {keys}; "
                           f"{_VALID_BATCH}")
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r}: b'data' must be uint8 of shape (N, {_CIFAR_ROW}), got {shape}; "
            f"{_VALID_BATCH}"
        )
    if data.shape[0] == 0:
        raise DatasetError(f"CIFAR-10 batch {str(path)!r} holds no images (b'data' has 0 rows); {_VALID_BATCH}")
    try:
        lab = np.asarray(labels)
    except (TypeError, ValueError) as exc:  # ragged or odd objects
        raise DatasetError(f"CIFAR-10 batch {str(path)!r}: b'labels' is not a list of ints ({exc}); "
                           f"{_VALID_BATCH}") from exc
    if lab.shape != (data.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r}: b'labels' must hold {data.shape[0]} ints (one per row of b'data'), "
            f"got {lab.dtype} {lab.shape}; {_VALID_BATCH}"
        )
    if lab.size and (lab.min() < 0 or lab.max() >= len(CIFAR10_CLASSES)):
        raise DatasetError(
            f"CIFAR-10 batch {str(path)!r}: labels must lie in 0..{len(CIFAR10_CLASSES) - 1}, "
            f"got {int(lab.min())}..{int(lab.max())}; {_VALID_BATCH}"
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

    def _problem(self, i: int) -> str | None:
        """None: every batch file was checked whole when it was read (``verify`` reads them)."""
        return None

    def __repr__(self) -> str:
        """Readable form."""
        return f"Cifar10Images({str(self.folder)!r}, split={self.split!r})"


