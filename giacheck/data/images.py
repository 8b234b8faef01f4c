"""Reading image files (bundled samples inside installed wheels, user files) and the deterministic resize.

Nothing here touches the network; see the package docstring."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from giacheck.errors import DatasetError, close_matches

log = logging.getLogger("giacheck.data")

_SPEC_FORMS = "'bundled', 'imagefolder:PATH', 'cifar10:PATH', or a plain PATH (CIFAR-10 if it holds data_batch_1)"
#: File suffixes an ImageFolder tree may hold (torchvision's list), matched case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

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


