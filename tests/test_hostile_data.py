"""Hostile image folders and CIFAR-10 batches: each is refused with a DatasetError that names the file, what is wrong
and what is valid, before any compute and without touching a file; deep and odd image modes convert by their white
level (a 16-bit gray of 32768 is 0.5, not white) or are refused."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from giacheck.data import Cifar10Images, ImageFolderImages, open_source, select_batch
from giacheck.data import images as images_module
from giacheck.data.images import _pil_to_rgb, _Unusable
from giacheck.errors import DatasetError
from tests._hostile import assert_unchanged, forbid_compute, snapshot


# ----------------------------------------------------------------------------------------------------- file makers
def png_bytes(width: int, height: int, *, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG assembled by hand (Pillow cannot write 16-bit colour or lie about the size); ``rows`` unfiltered."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png16_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of (H, W, 3) uint16 ``pixels``."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return png_bytes(w, h, bit_depth=16, color_type=2, rows=rows)


def tiff_bytes(pixels: np.ndarray, *, sample_format: int = 1, photometric: int = 1, extra_samples: int | None = None
               ) -> bytes:
    """An uncompressed little-endian TIFF of (H, W) or (H, W, 2) ``pixels`` with the sample format and photometric
    interpretation given (Pillow writes neither signed 16-bit, unsigned 32-bit nor WhiteIsZero deep samples)."""
    h, w = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = pixels.dtype.itemsize * 8
    data = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    tags = [(256, w), (257, h), (258, bits), (259, 1), (262, photometric), (273, 0), (277, samples), (278, h),
            (279, len(data)), (339, sample_format)]
    if extra_samples is not None:
        tags.append((338, extra_samples))
    tags.sort()
    offset = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, value in tags:
        value = offset if tag == 273 else value
        if tag in (273, 279):
            ifd += struct.pack("<HHII", tag, 4, 1, value)
        elif tag == 258 and samples == 2:  # one depth per sample, both inline
            ifd += struct.pack("<HHIHH", tag, 3, 2, value, value)
        else:
            ifd += struct.pack("<HHIHH", tag, 3, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def good_png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encoded(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)), "PNG")


def cifar_blob(rows: int = 2, *, data: object = None, labels: object = None, protocol: int = 2) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, size=(rows, 3072), dtype=np.uint8)
    obj = {b"batch_label": b"t", b"data": pixels if data is None else data,
           b"labels": list(range(rows)) if labels is None else labels}
    return pickle.dumps(obj, protocol=protocol)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


# --------------------------------------------------------------------------------------------------- hostile table
# A row: (files under the root, relative path -> bytes; spec scheme; names to verify or None; words the message holds).
# Every folder row also holds good images (cat/good.png, dog/good.png) that must not be named.
_BOMB_PNG = png_bytes(100_000, 100_000, bit_depth=1, color_type=0, rows=b"\x00")
_BIG_PNG = png_bytes(10_000, 10_000, bit_depth=1, color_type=0, rows=b"\x00")  # Pillow only warns at this size
_VALID_WORDS = ("valid:", "PNG, JPEG", "replace or remove")

FOLDER_ROWS: list[tuple[str, dict[str, bytes], tuple[str, ...]]] = [
    ("text_file_named_png", {"cat/notes.png": b"just some notes\n"},
     ("'cat/notes.png'", "not an image", "'.png'")),
    ("zero_byte_jpeg", {"dog/empty.jpg": b""}, ("'dog/empty.jpg'", "not an image")),
    ("truncated_png", {"cat/cut.png": good_png(1)[:60]}, ("'cat/cut.png'", "truncated or corrupt")),
    ("truncated_jpeg", {"dog/cut.jpg": encoded(Image.new("RGB", (64, 64), (9, 99, 199)), "JPEG")[:300]},
     ("'dog/cut.jpg'", "truncated or corrupt")),
    ("decompression_bomb", {"cat/bomb.png": _BOMB_PNG}, ("'cat/bomb.png'", "decompression bomb")),
    ("oversized_image", {"cat/huge.png": _BIG_PNG},
     ("'cat/huge.png'", "10000 x 10000", "Image.MAX_IMAGE_PIXELS", "downscale")),
    ("float_tiff_0_255", {"cat/f255.tif": encoded(Image.fromarray(np.linspace(0, 255, 20, dtype=np.float32)
                                                                  .reshape(4, 5)), "TIFF")},
     ("'cat/f255.tif'", "mode 'F'", "0..255", "outside [0, 1]", "divide it by its white level")),
    ("float_tiff_nan", {"cat/fnan.tif": encoded(Image.fromarray(np.array([[0.5, np.nan]], np.float32)), "TIFF")},
     ("'cat/fnan.tif'", "mode 'F'", "NaN or infinite")),
    ("int32_signed_tiff", {"cat/i32.tif": encoded(Image.fromarray(np.full((3, 4), 70_000, np.int32)), "TIFF")},
     ("'cat/i32.tif'", "mode 'I'", "32-bit signed integer", "unsigned 8- or 16-bit")),
    ("int16_signed_tiff", {"cat/s16.tif": tiff_bytes(np.full((3, 4), -5, np.int16), sample_format=2)},
     ("'cat/s16.tif'", "mode 'I'", "16-bit signed integer")),
    ("uint32_tiff", {"cat/u32.tif": tiff_bytes(np.full((3, 4), 7, np.uint32))},
     ("'cat/u32.tif'", "32-bit unsigned", "8- or 16-bit")),
    ("white_is_zero_16bit_tiff", {"cat/wiz.tif": tiff_bytes(np.full((3, 4), 1000, np.uint16), photometric=0)},
     ("'cat/wiz.tif'", "WhiteIsZero", "BlackIsZero")),
    ("premultiplied_gray_alpha_tiff",
     {"cat/la.tif": tiff_bytes(np.full((3, 4, 2), 100, np.uint8), photometric=1, extra_samples=1)},
     ("'cat/la.tif'", "mode 'La'", "not a mode giacheck converts")),
    ("macos_metadata_file", {"dog/._good.png": b"\x00\x05\x16\x07" + b"\x00" * 60},
     ("'dog/._good.png'", "macOS metadata file")),
    ("two_bad_files_both_named", {"cat/a.png": b"nope", "dog/b.jpg": good_png(2)[:40]},
     ("2 of 4 images", "'cat/a.png'", "'dog/b.jpg'")),
]


def _make_folder(root: Path, files: dict[str, bytes]) -> None:
    for rel, blob in {"cat/good.png": good_png(3), "dog/good.png": good_png(4), **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("files", "words"), [pytest.param(f, w, id=i) for i, f, w in FOLDER_ROWS])
def test_hostile_image_folder_refused_by_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                files: dict[str, bytes], words: tuple[str, ...]) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, files)
    before = snapshot(root)
    guard = forbid_compute(monkeypatch)
    source = open_source(f"imagefolder:{root}", num_classes=10)  # listing only: nothing is decoded yet
    with pytest.raises(DatasetError) as info:
        source.verify()
    message = str(info.value)
    for word in (*words, *_VALID_WORDS):
        assert word in message, f"{word!r} not in {message!r}"
    assert "good.png'" not in message.replace("._good.png'", "")  # good images are not named
    assert not guard.ran
    assert_unchanged(before, root)


CifarMaker = Callable[[Path], None]


def _batch(blob: bytes) -> CifarMaker:
    return lambda folder: (folder / "test_batch").write_bytes(blob)


_GOOD = cifar_blob()

CIFAR_ROWS: list[tuple[str, CifarMaker, tuple[str, ...]]] = [
    ("truncated_half", _batch(_GOOD[: len(_GOOD) // 2]), ("test_batch", "not a valid pickled batch", "truncated")),
    ("truncated_last_byte", _batch(_GOOD[:-1]), ("test_batch", "not a valid pickled batch")),
    ("empty_file", _batch(b""), ("test_batch", "not a valid pickled batch", "EOFError")),
    ("png_named_test_batch", _batch(good_png()), ("test_batch", "not a valid pickled batch")),
    ("huge_length_field", _batch(b"\x80\x04\x8e" + struct.pack("<Q", 50 * 2**30) + b"abc"),
     ("test_batch", "MemoryError", "not a valid pickled batch")),
    ("unknown_codec", _batch(pickle.dumps({b"data": b"x"}, protocol=2).replace(b"latin1", b"Iatin1")),
     ("test_batch", "not a valid pickled batch")),
    ("code_in_pickle", _batch(pickle.dumps({b"data": _Evil(), b"labels": []})),
     ("test_batch", "builtins.print is not allowed")),
    ("wrong_row_length", _batch(cifar_blob(data=np.zeros((2, 1024), np.uint8))),
     ("test_batch", "(N, 3072)", "got uint8 (2, 1024)")),
    ("wrong_rank", _batch(cifar_blob(data=np.zeros((2, 32, 32, 3), np.uint8))),
     ("test_batch", "(N, 3072)", "(2, 32, 32, 3)")),
    ("float_pixels", _batch(cifar_blob(data=np.zeros((2, 3072), np.float32))), ("test_batch", "got float32")),
    ("no_rows", _batch(cifar_blob(data=np.zeros((0, 3072), np.uint8), labels=[], protocol=4)),
     ("test_batch", "holds no images")),
    ("labels_short", _batch(cifar_blob(labels=[1])), ("test_batch", "must hold 2 ints")),
    ("labels_out_of_range", _batch(cifar_blob(labels=[0, 10])), ("test_batch", "0..9", "got 0..10")),
    ("not_a_dict", _batch(pickle.dumps([1, 2, 3], protocol=2)), ("test_batch", "must be a dict", "got list")),
]


@pytest.mark.parametrize(("make", "words"), [pytest.param(m, w, id=i) for i, m, w in CIFAR_ROWS])
def test_hostile_cifar_batch_refused_by_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], make: CifarMaker,
                                               words: tuple[str, ...]) -> None:
    make(tmp_path)
    before = snapshot(tmp_path)
    guard = forbid_compute(monkeypatch)
    source = Cifar10Images(tmp_path, split="test")
    with pytest.raises(DatasetError) as info:
        source.verify()
    message = str(info.value)
    for word in (*words, str(tmp_path), "valid: a pickled dict with b'data'"):
        assert word in message, f"{word!r} not in {message!r}"
    assert "pwned" not in capsys.readouterr().out
    assert not guard.ran
    assert_unchanged(before, tmp_path)


def test_verify_refuses_unknown_names(tmp_path: Path) -> None:
    _make_folder(tmp_path, {})
    source = ImageFolderImages(tmp_path)
    with pytest.raises(DatasetError, match=r"names \['cat/god.png'\] are not images of .*valid names: cat/good.png"):
        source.verify(["cat/god.png"])
    with pytest.raises(DatasetError, match="names must be a sequence of image names"):
        source.verify("cat/good.png")  # type: ignore[arg-type]


def test_verify_names_checks_only_those(tmp_path: Path) -> None:
    _make_folder(tmp_path, {"dog/zbad.png": b"junk"})
    source = ImageFolderImages(tmp_path)
    source.verify(["cat/good.png", "dog/good.png"])  # the bad file is not among them
    with pytest.raises(DatasetError, match=r"1 of 1 images .*'dog/zbad.png'"):
        source.verify(["dog/zbad.png"])


def test_verify_decodes_an_unchanged_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_folder(tmp_path, {})
    decoded: list[Path] = []
    real = images_module._decode
    monkeypatch.setattr(images_module, "_decode", lambda path: decoded.append(path) or real(path))
    source = ImageFolderImages(tmp_path)
    source.verify()
    source.verify()
    assert sorted(p.name for p in decoded) == ["good.png", "good.png"]
    (tmp_path / "cat" / "good.png").write_bytes(b"replaced by junk")  # a changed file is decoded again
    with pytest.raises(DatasetError, match=r"'cat/good\.png': its content is not an image"):
        source.verify()


def test_many_bad_files_are_counted_past_twenty(tmp_path: Path) -> None:
    _make_folder(tmp_path, {f"cat/bad{k:02d}.png": b"junk" for k in range(25)})
    with pytest.raises(DatasetError) as info:
        ImageFolderImages(tmp_path).verify()
    message = str(info.value)
    assert message.startswith("25 of 27 images")
    assert "'cat/bad19.png'" in message and "'cat/bad20.png'" not in message
    assert "and 5 more" in message


def test_good_sources_verify(tmp_path: Path) -> None:
    _make_folder(tmp_path / "imgs", {})
    open_source(f"imagefolder:{tmp_path / 'imgs'}", num_classes=2).verify()
    (tmp_path / "test_batch").write_bytes(_GOOD)
    Cifar10Images(tmp_path, split="test").verify()
    open_source("bundled", num_classes=10).verify(["chelsea", "logo"])


def test_load_refuses_with_the_same_words_as_verify(tmp_path: Path) -> None:
    _make_folder(tmp_path, {"cat/f255.tif": FOLDER_ROWS[6][1]["cat/f255.tif"]})
    source = ImageFolderImages(tmp_path)
    with pytest.raises(DatasetError, match=r"cannot read image '.*f255\.tif': mode 'F' .* valid: a complete PNG"):
        select_batch(source, batch_size=1, size=8, distinct_labels=False)


# ------------------------------------------------------------------------------------------- numeric conversions
def load_one(tmp_path: Path, name: str, blob: bytes) -> np.ndarray:
    path = tmp_path / "c" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return ImageFolderImages(tmp_path).load(0)


def gray16(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint16))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_gray_scaled_by_65535(tmp_path: Path, fmt: str) -> None:
    values = np.array([[0, 32768, 65535], [1, 16384, 49152]], np.uint16)
    img = load_one(tmp_path, f"g.{fmt.lower()}", encoded(gray16(values), fmt))
    assert img.dtype == np.float32 and img.shape == (2, 3, 3)
    np.testing.assert_allclose(img[..., 0], values / 65535, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])  # gray replicated to RGB
    assert abs(float(img[0, 1, 1]) - 0.5) < 1e-4  # 32768 is mid-gray, not white


def test_16bit_gray_big_endian_tiff(tmp_path: Path) -> None:
    raw = np.full((3, 4), 32768, ">u2").tobytes()
    blob = encoded(Image.frombytes("I;16B", (4, 3), raw), "TIFF")
    assert Image.open(io.BytesIO(blob)).mode == "I;16B"
    np.testing.assert_allclose(load_one(tmp_path, "b.tif", blob), 32768 / 65535, atol=1e-7)


def test_16bit_pgm_is_mode_i_scaled_by_its_maxval(tmp_path: Path) -> None:
    header = b"P5\n2 1\n1023\n"  # Pillow rescales 0..1023 to 0..65535 and opens the file in mode I
    blob = header + np.array([512, 1023], ">u2").tobytes()
    assert Image.open(io.BytesIO(blob)).mode == "I"
    img = load_one(tmp_path, "g.pgm", blob)
    np.testing.assert_allclose(img[0, :, 0], [512 / 1023, 1.0], atol=1e-4)


def test_float_tiff_in_unit_range_kept(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    img = load_one(tmp_path, "f.tif", encoded(Image.fromarray(values), "TIFF"))
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img[..., 1], values)  # was all black before


def test_16bit_rgb_png_keeps_the_high_byte(tmp_path: Path) -> None:
    pixels = np.array([[[65535, 32768, 0], [4096, 61440, 32767]]], np.uint16)
    img = load_one(tmp_path, "rgb16.png", png16_rgb(pixels))
    assert img.dtype == np.uint8
    np.testing.assert_array_equal(img, pixels >> 8)
    assert np.abs(img / 255 - pixels / 65535).max() < 1 / 255


def test_batch_of_16bit_image_is_mid_gray(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    gray16(np.full((8, 8), 32768)).save(tmp_path / "c" / "g.png")
    batch = select_batch(ImageFolderImages(tmp_path), batch_size=1, size=4)
    torch.testing.assert_close(batch.images, torch.full((1, 3, 4, 4), 32768 / 65535), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("make", "fmt", "expected"),
    [
        pytest.param(lambda: Image.new("1", (3, 2), 1), "PNG", (255, 255, 255), id="1-bit-white"),
        pytest.param(lambda: Image.new("1", (3, 2), 0), "BMP", (0, 0, 0), id="1-bit-black"),
        pytest.param(lambda: Image.new("L", (3, 2), 77), "PNG", (77, 77, 77), id="L"),
        pytest.param(lambda: Image.new("RGB", (3, 2), (10, 20, 30)).quantize(4), "PNG", (10, 20, 30), id="P"),
        pytest.param(lambda: Image.new("LA", (3, 2), (100, 255)), "PNG", (100, 100, 100), id="LA-opaque"),
        pytest.param(lambda: Image.new("LA", (3, 2), (100, 0)), "PNG", (255, 255, 255), id="LA-transparent"),
        pytest.param(lambda: Image.new("RGBA", (3, 2), (200, 0, 0, 0)), "PNG", (255, 255, 255), id="RGBA-clear"),
        pytest.param(lambda: Image.new("RGBA", (3, 2), (200, 40, 0, 255)), "WEBP", (200, 40, 0), id="RGBA-webp"),
        pytest.param(lambda: Image.new("CMYK", (3, 2), (0, 128, 255, 0)), "TIFF", (255, 127, 0), id="CMYK-tiff"),
        pytest.param(lambda: Image.new("RGB", (3, 2), (200, 100, 50)).convert("YCbCr"), "TIFF", (199, 99, 49),
                     id="YCbCr"),
    ],
)
def test_8bit_modes_convert_to_rgb(tmp_path: Path, make: Callable[[], Image.Image], fmt: str,
                                   expected: tuple[int, int, int]) -> None:
    img = load_one(tmp_path, f"x.{fmt.lower()}", encoded(make(), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert img.dtype == np.uint8 and img.shape == (2, 3, 3)
    np.testing.assert_allclose(img.reshape(-1, 3), np.tile(expected, (6, 1)), atol=1)


def test_palette_with_transparent_entry_composited_on_white(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 40, 50, 60])
    pal.putpixel((1, 0), 1)
    img = load_one(tmp_path, "p.png", encoded(pal, "PNG", transparency=1))
    np.testing.assert_array_equal(img[0], [[10, 20, 30], [255, 255, 255]])


def test_cmyk_jpeg_converts_close_to_source(tmp_path: Path) -> None:
    blob = encoded(Image.new("RGB", (16, 16), (200, 100, 50)).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(blob)).mode == "CMYK"
    np.testing.assert_allclose(load_one(tmp_path, "k.jpg", blob).mean(axis=(0, 1)), (200, 100, 50), atol=3)


def test_12bit_tiff_scaled_by_4095(tmp_path: Path) -> None:
    img = Image.open(io.BytesIO(tiff_bytes(np.full((2, 2), 2048, np.uint16))))
    img.load()
    img.tag_v2[258] = (12,)  # as a 12-bit TIFF states it; Pillow unpacks it to mode I;16
    np.testing.assert_allclose(_pil_to_rgb(img), 2048 / 4095, atol=1e-6)
    bright = Image.open(io.BytesIO(tiff_bytes(np.full((2, 2), 5000, np.uint16))))
    bright.load()
    bright.tag_v2[258] = (12,)
    with pytest.raises(_Unusable, match=r"mode 'I;16' \(12-bit gray\) holds values 5000..5000, outside 0..4095"):
        _pil_to_rgb(bright)


def test_mode_without_a_conversion_refused() -> None:
    with pytest.raises(_Unusable, match="mode 'HSV' is not a mode giacheck converts to RGB"):
        _pil_to_rgb(Image.new("HSV", (2, 2)))
