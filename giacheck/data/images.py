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


#: Pillow modes of 8-bit images, converted to RGB by Pillow (transparency is composited on white).
_MODES_8BIT: tuple[str, ...] = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB")
#: Pillow modes of 16-bit unsigned grayscale images, scaled to [0, 1] by their white level (65535, or 2**bits - 1
#: for a TIFF that states fewer bits per sample).
_MODES_16BIT: tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N")
#: What an image file must be, for messages that refuse one.
VALID_IMAGES = (
    "a complete PNG, JPEG, BMP, PPM/PGM, TIFF or WebP file in Pillow mode "
    f"{', '.join(_MODES_8BIT)} (8-bit), {', '.join(_MODES_16BIT)} or I (16-bit gray, from PNG, PGM or a TIFF of "
    f"at most 16 unsigned bits) or F (float gray with values in [0, 1]), at most Image.MAX_IMAGE_PIXELS pixels"
)
_SHOWN_PROBLEMS = 20  # images named in one refusal; the rest are counted


class _Unusable(Exception):
    """Why one image file cannot be used; turned into a DatasetError that names the file."""


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


def _integer_depth(img: Image.Image) -> int:
    """Bits per sample of an integer grayscale image (mode ``I`` or ``I;16*``), from what the file states."""
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits, sample_format = tags.get(258, (16,)), tags.get(339, (1,))  # BitsPerSample; SampleFormat 1 = unsigned
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if sample_format != 1:
            kind = {2: "signed integer", 3: "floating-point"}.get(sample_format, f"SampleFormat {sample_format}")
            raise _Unusable(f"mode {img.mode!r} from a TIFF of {bits}-bit {kind} samples, whose white level is not "
                            "defined; save it with unsigned 8- or 16-bit samples")
        if not 1 <= bits <= 16:
            raise _Unusable(f"mode {img.mode!r} from a TIFF of {bits}-bit unsigned samples, whose white level "
                            f"(2**{bits} - 1) is almost never what the data means; save it with 8- or 16-bit samples")
        return int(bits)
    if img.mode in _MODES_16BIT or img.format in ("PNG", "PPM"):  # PNG holds at most 16 bits; PGM is read as 0..65535
        return 16
    raise _Unusable(f"mode {img.mode!r} (32-bit integer) from a {img.format or 'unknown-format'} file, whose bit depth "
                    "is not stated, so its white level is unknown")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate an (H, W) float32 array in [0, 1] to (H, W, 3)."""
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image to (H, W, 3): uint8 for 8-bit modes, float32 in [0, 1] for 16-bit and float gray.

    Transparency (an alpha band or a transparent palette entry or colour key) is composited on white. A 16-bit
    colour PNG reaches here as mode ``RGB``: Pillow keeps the high byte of each sample, which is the value to 8 bits.

    Raises:
        _Unusable: a mode outside ``VALID_IMAGES``, integer samples of unknown depth or beyond it, or float samples
            outside [0, 1] or not finite.
    """
    mode = img.mode
    if mode in _MODES_8BIT:
        if mode in ("RGBA", "LA", "PA") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        return np.array(img.convert("RGB"), dtype=np.uint8)
    if img.format == "TIFF" and getattr(img, "tag_v2", {}).get(262) == 0:  # PhotometricInterpretation
        raise _Unusable(f"mode {mode!r} from a TIFF whose PhotometricInterpretation is WhiteIsZero, which Pillow "
                        "does not invert above 8 bits; save it as BlackIsZero")
    if mode in _MODES_16BIT or mode == "I":
        bits = _integer_depth(img)
        gray = np.asarray(img)
        top = 2**bits - 1
        lo, hi = int(gray.min()), int(gray.max())
        if lo < 0 or hi > top:
            raise _Unusable(f"mode {mode!r} ({bits}-bit gray) holds values {lo}..{hi}, outside 0..{top}")
        return _gray_to_rgb(gray.astype(np.float32) / np.float32(top))
    if mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        if not np.isfinite(gray).all():
            raise _Unusable(f"mode 'F' (float gray) holds {int((~np.isfinite(gray)).sum())} NaN or infinite values")
        lo, hi = float(gray.min()), float(gray.max())
        if lo < 0.0 or hi > 1.0:
            raise _Unusable(f"mode 'F' (float gray) holds values {lo:g}..{hi:g}, outside [0, 1] (a float image is "
                            "not rescaled: its white level is unknown); divide it by its white level (e.g. 255) "
                            "or save it as 8- or 16-bit")
        return _gray_to_rgb(gray)
    raise _Unusable(f"mode {mode!r} is not a mode giacheck converts to RGB")


def _decode(path: Path) -> np.ndarray:
    """Open, fully decode and convert one image file; raises :class:`_Unusable` with why it cannot be used."""
    try:
        opened = Image.open(path)
    except FileNotFoundError:
        raise _Unusable("the file does not exist (was it removed after the source was opened?)") from None
    except Image.UnidentifiedImageError as exc:
        raise _Unusable(f"its content is not an image Pillow can identify (the suffix is {path.suffix!r})") from exc
    except Image.DecompressionBombError as exc:
        raise _Unusable(f"a decompression bomb: {exc}") from exc
    except Exception as exc:  # a hostile file can make Pillow's parsers raise anything
        raise _Unusable(f"its header is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    with opened as img:
        (w, h), limit = img.size, Image.MAX_IMAGE_PIXELS
        if limit is not None and w * h > limit:
            raise _Unusable(f"a possible decompression bomb: {w} x {h} = {w * h} pixels, more than "
                            f"Image.MAX_IMAGE_PIXELS = {limit}; downscale it")
        if img.mode not in (*_MODES_8BIT, *_MODES_16BIT, "I", "F"):
            raise _Unusable(f"mode {img.mode!r} is not a mode giacheck converts to RGB")
        try:
            img.load()
        except Exception as exc:  # truncated or corrupt data: OSError mostly, but decoders raise other types too
            raise _Unusable(f"its image data is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
        return _pil_to_rgb(img)


def _refusal(path: Path, reason: str) -> str:
    return f"cannot read image {str(path)!r}: {reason}; valid: {VALID_IMAGES}; replace or remove the file"


def _read_image(path: Path) -> np.ndarray:
    """Decode one image file to (H, W, 3) uint8 (or float32 in [0, 1] above 8 bits), raising DatasetError that names
    the file, what is wrong with it and what is valid."""
    try:
        return _decode(path)
    except _Unusable as exc:
        raise DatasetError(_refusal(path, str(exc))) from exc


# (path, size, mtime) of every image file this process decoded in full without a problem.
_VERIFIED: set[tuple[str, int, int]] = set()


def _image_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used, or None; a file unchanged since it last decoded is not
    decoded again."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot stat the file ({type(exc).__name__}: {exc})"
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return None
    try:
        _decode(path)
    except _Unusable as exc:
        hint = " (a macOS metadata file: delete it)" if path.name.startswith("._") else ""
        return f"{exc}{hint}"
    _VERIFIED.add(key)
    return None


def _problems_message(what: str, checked: int, problems: list[tuple[str, str]]) -> str:
    """One refusal naming every image (up to ``_SHOWN_PROBLEMS``) that cannot be used, with why."""
    shown = "; ".join(f"{name!r}: {reason}" for name, reason in problems[:_SHOWN_PROBLEMS])
    more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
    return (f"{len(problems)} of {checked} {what} cannot be used: {shown}{more}; valid: {VALID_IMAGES}; "
            "replace or remove these files")


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
def _pixel_problem(img: object) -> str | None:
    """Why ``img`` is not an (H, W, 3) uint8 array or floating array in [0, 1], or None."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        shape = getattr(img, "shape", type(img).__name__)
        return f"image must be a non-empty (H, W, 3) numpy array, got {shape}"
    if img.dtype == np.uint8:
        return None
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
            return "a floating image must hold finite values in [0, 1]; convert it or pass uint8"
        return None
    return f"image dtype must be uint8 or floating in [0, 1], got {img.dtype}"


def to_tensor_resized(img: np.ndarray, size: int) -> torch.Tensor:
    """Center-crop ``img`` to a square and resize it to (3, size, size) float32 in [0, 1] (bilinear, antialiased).

    Args:
        img: (H, W, 3) uint8 array, or a floating array with values in [0, 1].
        size: output side length in pixels.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DatasetError(f"size must be a positive int, got {size!r}")
    problem = _pixel_problem(img)
    if problem is not None:
        raise DatasetError(problem)
    if img.dtype == np.uint8:
        t = torch.from_numpy(img.astype(np.float32)).div_(255.0)  # astype copies: the input is never aliased
    else:
        t = torch.from_numpy(img.astype(np.float32))
    h, w = t.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    t = t[top : top + side, left : left + side].permute(2, 0, 1).contiguous()
    if side != size:
        t = functional.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return t.clamp_(0.0, 1.0)


