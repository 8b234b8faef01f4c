"""Tests for giacheck.data: offline bundled images, transforms, ImageFolder and CIFAR-10 loaders, batch selection."""

from __future__ import annotations

import pickle
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from giacheck.data import (
    BUNDLED_NAMES,
    BundledImages,
    Cifar10Images,
    ImageBatch,
    ImageFolderImages,
    disjoint_pool,
    load_bundled,
    open_source,
    select_batch,
    to_tensor_resized,
)
from giacheck.errors import DatasetError, GiacheckError

# skimage.data loader for each bundled name that comes from scikit-image (the reference for pixel equality).
SKIMAGE_LOADERS = {
    "astronaut": "astronaut",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "hubble_deep_field": "hubble_deep_field",
    "immunohistochemistry": "immunohistochemistry",
    "retina": "retina",
    "colorwheel": "colorwheel",
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every socket connection and name lookup fail."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("giacheck.data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def write_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (20, 12), mode: str = "RGB") -> None:
    """Write a solid-colour image file (size is W x H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).convert(mode).save(path)


def write_cifar_batch(path: Path, labels: list[int], *, seed: int, protocol: int = 2) -> np.ndarray:
    """Write a CIFAR-10 python batch with random pixels; return the (N, 3072) data rows."""
    rows = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    obj = {b"batch_label": b"test", b"labels": labels, b"data": rows, b"filenames": [b"x.png"] * len(labels)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return rows


def py2_cifar_pickle(rows: np.ndarray, labels: list[int]) -> bytes:
    """Hand-assembled pickle in the layout of the original files (Python 2 cPickle, numpy 1.x, str keys)."""
    raw = rows.tobytes()
    shape = b"M" + struct.pack("<H", rows.shape[0]) + b"M" + struct.pack("<H", rows.shape[1]) + b"\x86"
    dtype = b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        + b"(K\x01"
        + shape
        + dtype
        + b"\x89T"
        + struct.pack("<I", len(raw))
        + raw
        + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(U\x04data" + array + b"U\x06labels" + label_list + b"u."


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A tiny CIFAR-10 tree: parent/cifar-10-batches-py/{data_batch_1..5,test_batch}, 4 images per batch."""
    folder = tmp_path / "cifar-10-batches-py"
    for k in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{k}", [(k + j) % 10 for j in range(4)], seed=k)
    write_cifar_batch(folder / "test_batch", [9, 8, 9, 7], seed=0)
    return tmp_path


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """A tiny ImageFolder tree with classes cat (2 images, one nested) and dog (1 grayscale jpg), plus junk."""
    root = tmp_path / "imgs"
    write_png(root / "dog" / "d0.jpg", (0, 0, 255), mode="L")
    write_png(root / "cat" / "b.png", (255, 0, 0))
    write_png(root / "cat" / "sub" / "a.PNG", (0, 255, 0))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README").write_text("not a class")
    return root


# ------------------------------------------------------------------------------------------------------ bundled
def test_bundled_names_fixed_and_unique() -> None:
    assert BUNDLED_NAMES[:4] == ("astronaut", "chelsea", "coffee", "rocket")
    assert {"bus", "zidane", "logo", "colorwheel"} <= set(BUNDLED_NAMES)
    assert len(set(BUNDLED_NAMES)) == len(BUNDLED_NAMES)


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_loads_offline(name: str, no_network: None) -> None:
    img = load_bundled(name)
    assert img.dtype == np.uint8
    assert img.ndim == 3
    assert img.shape[2] == 3
    assert min(img.shape[:2]) >= 100
    assert img.std() > 5  # a real picture, not a blank
    img[0, 0] = 0  # callers get their own copy
    assert load_bundled(name) is not img


@pytest.mark.parametrize("name", sorted(SKIMAGE_LOADERS))
def test_bundled_matches_skimage_loader(name: str, no_network: None) -> None:
    skdata = pytest.importorskip("skimage.data")
    reference = getattr(skdata, SKIMAGE_LOADERS[name])()
    np.testing.assert_array_equal(load_bundled(name), reference)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere; left half transparent, right half opaque
    rgba[:, 3:, 3] = 255
    (tmp_path / "a").mkdir()
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a" / "x.png")
    img = ImageFolderImages(tmp_path).load(0)
    assert img.shape == (4, 6, 3)
    assert (img[:, :3] == 255).all()  # transparent -> white
    assert (img[:, 3:] == (200, 0, 0)).all()


def test_bundled_logo_is_rgb(no_network: None) -> None:
    assert load_bundled("logo").shape == (500, 500, 3)  # RGBA file (fully opaque), alpha dropped


def test_bundled_needs_no_download_in_fresh_process() -> None:
    """In a clean interpreter with sockets disabled, every bundled image loads and ultralytics is not imported."""
    code = textwrap.dedent(
        """
        import socket, sys
        def refuse(*a, **k):
            raise SystemExit("network used")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from giacheck.data import BUNDLED_NAMES, load_bundled
        for name in BUNDLED_NAMES:
            load_bundled(name)
        assert "ultralytics" not in sys.modules, "ultralytics was imported"
        assert "pooch" not in sys.modules, "pooch was imported"
        print("ok", len(BUNDLED_NAMES))
        """
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok {len(BUNDLED_NAMES)}"


def test_unknown_bundled_name_lists_valid() -> None:
    with pytest.raises(DatasetError, match=r"unknown bundled image 'astronot'; valid names: astronaut, chelsea.*"):
        load_bundled("astronot")
    with pytest.raises(DatasetError, match="Did you mean: astronaut"):
        load_bundled("astronot")


def test_errors_are_giacheck_errors() -> None:
    with pytest.raises(GiacheckError):
        load_bundled("nope")


def test_bundled_labels_distinct_below_num_classes() -> None:
    src = BundledImages(num_classes=5)
    labels = [src.label(i) for i in range(len(src))]
    assert labels == [i % 5 for i in range(len(BUNDLED_NAMES))]
    assert len(set(labels[:5])) == 5
    assert src.image_name(0) == "astronaut"
    assert src.name == "bundled"
    with pytest.raises(DatasetError, match="num_classes must be a positive int"):
        BundledImages(num_classes=0)
    with pytest.raises(DatasetError, match=r"image index 12 is out of range for bundled; valid: 0\.\.11"):
        src.label(12)


# --------------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("shape", [(40, 60, 3), (60, 40, 3), (33, 33, 3), (8, 5, 3)])
@pytest.mark.parametrize("size", [1, 16, 32, 64])
def test_to_tensor_resized_shape_range(shape: tuple[int, int, int], size: int) -> None:
    img = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    t = to_tensor_resized(img, size)
    assert t.shape == (3, size, size)
    assert t.dtype == torch.float32
    assert float(t.min()) >= 0.0
    assert float(t.max()) <= 1.0


def test_to_tensor_resized_deterministic_and_exact_when_no_resize() -> None:
    img = load_bundled("chelsea")
    a, b = to_tensor_resized(img, 64), to_tensor_resized(img, 64)
    assert torch.equal(a, b)
    small = np.random.default_rng(1).integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    t = to_tensor_resized(small, 10)  # square center crop of width 14 -> columns 2..11, no resampling
    expected = torch.from_numpy(small[:, 2:12].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(t, expected)


def test_to_tensor_resized_center_crop_and_constant() -> None:
    img = np.zeros((10, 30, 3), dtype=np.uint8)
    img[:, 10:20] = 200  # only the centre square is bright
    t = to_tensor_resized(img, 5)
    torch.testing.assert_close(t, torch.full((3, 5, 5), 200 / 255.0))


def test_to_tensor_resized_accepts_unit_float() -> None:
    img = np.full((8, 8, 3), 0.25, dtype=np.float64)
    torch.testing.assert_close(to_tensor_resized(img, 4), torch.full((3, 4, 4), 0.25))


@pytest.mark.parametrize(
    ("img", "size", "match"),
    [
        (np.zeros((4, 4), np.uint8), 4, r"must be a non-empty \(H, W, 3\) numpy array, got \(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), 4, r"got \(4, 4, 4\)"),
        (np.zeros((0, 4, 3), np.uint8), 4, "non-empty"),
        (np.full((4, 4, 3), 2.0), 4, r"finite values in \[0, 1\]"),
        (np.zeros((4, 4, 3), np.int32), 4, "dtype must be uint8"),
        (np.zeros((4, 4, 3), np.uint8), 0, "size must be a positive int, got 0"),
    ],
)
def test_to_tensor_resized_rejects(img: np.ndarray, size: int, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        to_tensor_resized(img, size)


# ------------------------------------------------------------------------------------------------------ ImageFolder
def test_imagefolder_loads(folder_root: Path) -> None:
    src = ImageFolderImages(folder_root)
    assert src.classes == ("cat", "dog")
    assert src.num_classes == 2
    assert len(src) == 3
    assert [src.image_name(i) for i in range(3)] == ["cat/b.png", "cat/sub/a.PNG", "dog/d0.jpg"]
    assert [src.label(i) for i in range(3)] == [0, 0, 1]
    batch = src.batch([0, 2], 8)
    assert batch.images.shape == (2, 3, 8, 8)
    assert batch.labels.tolist() == [0, 1]
    torch.testing.assert_close(batch.images[0], torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 8, 8))
    gray = batch.images[1]  # grayscale jpg converted to RGB: three equal channels
    assert torch.equal(gray[0], gray[1])
    assert torch.equal(gray[1], gray[2])
    assert src.name == f"imagefolder:{folder_root}"


def test_imagefolder_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderImages(tmp_path / "nope")


def test_imagefolder_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file.png"
    write_png(f, (1, 2, 3))
    with pytest.raises(DatasetError, match="is not a directory"):
        ImageFolderImages(f)


def test_imagefolder_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no class folders"):
        ImageFolderImages(tmp_path)


def test_imagefolder_no_images(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"has class folders \(a\) but no images"):
        ImageFolderImages(tmp_path)


def test_imagefolder_empty_class(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "x.png", (1, 2, 3))
    (tmp_path / "b").mkdir()
    with pytest.raises(DatasetError, match=r"class folder\(s\) b hold no images"):
        ImageFolderImages(tmp_path)


def test_imagefolder_unreadable_image_named(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "good.png", (1, 2, 3))
    (tmp_path / "a" / "zbad.png").write_bytes(b"this is not a png")
    src = ImageFolderImages(tmp_path)  # listing is cheap; decoding happens on load
    assert src.load(0).shape == (12, 20, 3)
    with pytest.raises(DatasetError, match=r"cannot read image '.*zbad\.png'"):
        src.batch([1], 8)


# ---------------------------------------------------------------------------------------------------------- CIFAR
def test_cifar_loads_parent_or_folder(cifar_root: Path) -> None:
    folder = cifar_root / "cifar-10-batches-py"
    rows = write_cifar_batch(folder / "data_batch_1", [3, 3, 5, 0], seed=11)
    for root in (cifar_root, folder):
        src = Cifar10Images(root)
        assert src.folder == folder
        assert len(src) == 20
        assert src.num_classes == 10
        assert [src.label(i) for i in range(4)] == [3, 3, 5, 0]
        assert src.image_name(5) == "data_batch_2[1]"
        img = src.load(2)
        assert img.shape == (32, 32, 3)
        assert img.dtype == np.uint8
        np.testing.assert_array_equal(img[..., 0].ravel(), rows[2, :1024])  # red plane first, row-major
        np.testing.assert_array_equal(img[..., 2].ravel(), rows[2, 2048:])
        batch = src.batch([2], 32)
        torch.testing.assert_close(batch.images[0], torch.from_numpy(img).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_protocols(tmp_path: Path, protocol: int) -> None:
    write_cifar_batch(tmp_path / "test_batch", [1, 2], seed=0, protocol=protocol)
    src = Cifar10Images(tmp_path, split="test")
    assert len(src) == 2
    assert src.label(1) == 2
    assert src.image_name(0) == "test_batch[0]"


def test_cifar_reads_python2_numpy1_pickle(tmp_path: Path) -> None:
    rows = np.random.default_rng(3).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    (tmp_path / "test_batch").write_bytes(py2_cifar_pickle(rows, [4, 0, 9]))
    src = Cifar10Images(tmp_path, split="test")
    assert [src.label(i) for i in range(3)] == [4, 0, 9]
    np.testing.assert_array_equal(src.load(1).transpose(2, 0, 1).reshape(-1), rows[1])


def test_cifar_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"CIFAR-10 path .* does not exist"):
        Cifar10Images(tmp_path / "nope")


def test_cifar_missing_files(cifar_root: Path) -> None:
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="lacks data_batch_3"):
        Cifar10Images(cifar_root)
    assert len(Cifar10Images(cifar_root, split="test")) == 4


def test_cifar_unknown_split(cifar_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown CIFAR-10 split 'val'; valid: train, test"):
        Cifar10Images(cifar_root, split="val")  # type: ignore[arg-type]


def test_cifar_malformed_pickle(tmp_path: Path) -> None:
    (tmp_path / "test_batch").write_bytes(b"\x80\x02garbage that is not a pickle")
    src = Cifar10Images(tmp_path, split="test")
    with pytest.raises(DatasetError, match=r"test_batch' is not a valid pickled batch"):
        len(src)


def test_cifar_truncated_pickle(tmp_path: Path) -> None:
    write_cifar_batch(tmp_path / "test_batch", [1, 2], seed=0)
    blob = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="is not a valid pickled batch"):
        len(Cifar10Images(tmp_path, split="test"))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match=r"global builtins\.print is not allowed"):
        len(Cifar10Images(tmp_path, split="test"))
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2, 3], "must be a dict with keys b'data' and b'labels', got list"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"must be a dict with keys .*got \[\"b'data'\"\]"),
        (
            {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
            r"uint8 of shape \(N, 3072\), got uint8 \(2, 100\)",
        ),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "got float32"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "must hold 2 ints"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must lie in 0\.\.9, got 0\.\.10"),
    ],
)
def test_cifar_malformed_content(tmp_path: Path, obj: object, match: str) -> None:
    (tmp_path / "test_batch").write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DatasetError, match=match):
        len(Cifar10Images(tmp_path, split="test"))


# ------------------------------------------------------------------------------------------------------ open_source
def test_open_source_forms(cifar_root: Path, folder_root: Path) -> None:
    assert isinstance(open_source("bundled", num_classes=10), BundledImages)
    assert isinstance(open_source(f"imagefolder:{folder_root}", num_classes=2), ImageFolderImages)
    assert isinstance(open_source(f"cifar10:{cifar_root}", num_classes=10), Cifar10Images)
    assert isinstance(open_source(str(cifar_root), num_classes=10), Cifar10Images)  # auto-detected
    assert isinstance(open_source(str(cifar_root / "cifar-10-batches-py"), num_classes=10), Cifar10Images)
    assert isinstance(open_source(str(folder_root), num_classes=1000), ImageFolderImages)
    src = open_source(f"cifar10:{cifar_root}", num_classes=10)
    assert isinstance(open_source(src.name, num_classes=10), Cifar10Images)  # name round-trips


def test_open_source_unknown_scheme() -> None:
    with pytest.raises(DatasetError, match=r"unknown image source scheme 'cifar100'.*valid forms: 'bundled', 'imagefo"):
        open_source("cifar100:/data", num_classes=10)
    with pytest.raises(DatasetError, match="Did you mean: imagefolder"):
        open_source("imagefoldr:/data", num_classes=10)


def test_open_source_bad_specs(tmp_path: Path, folder_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"image source path .* does not exist"):
        open_source(str(tmp_path / "missing"), num_classes=10)
    with pytest.raises(DatasetError, match="has no path after the colon"):
        open_source("cifar10:", num_classes=10)
    with pytest.raises(DatasetError, match="'bundled' takes no path"):
        open_source("bundled:x", num_classes=10)
    with pytest.raises(DatasetError, match="non-empty string"):
        open_source("  ", num_classes=10)
    with pytest.raises(DatasetError, match=r"has 2 classes but the model has num_classes=1"):
        open_source(str(folder_root), num_classes=1)
    with pytest.raises(DatasetError, match=r"ImageFolder path .* does not exist"):
        open_source(f"imagefolder:{tmp_path / 'missing'}", num_classes=10)


# -------------------------------------------------------------------------------------------------------- selection
def test_select_batch_bundled_distinct() -> None:
    src = BundledImages(num_classes=3)
    batch = select_batch(src, batch_size=3, size=16, offset=1)
    assert isinstance(batch, ImageBatch)
    assert batch.names == ("chelsea", "coffee", "rocket")
    assert batch.labels.tolist() == [1, 2, 0]
    assert batch.images.shape == (3, 3, 16, 16)
    assert batch.batch_size == 3
    assert batch.size == 16
    again = select_batch(src, batch_size=3, size=16, offset=1)
    assert torch.equal(batch.images, again.images)
    assert batch.names == again.names


def test_select_batch_skips_repeated_labels(cifar_root: Path) -> None:
    folder = cifar_root / "cifar-10-batches-py"
    write_cifar_batch(folder / "data_batch_1", [3, 3, 5, 3], seed=1)
    src = Cifar10Images(cifar_root)
    batch = select_batch(src, batch_size=3, size=8)
    assert batch.names == ("data_batch_1[0]", "data_batch_1[2]", "data_batch_2[0]")
    assert batch.labels.tolist() == [3, 5, 2]
    plain = select_batch(src, batch_size=3, size=8, distinct_labels=False)
    assert plain.names == ("data_batch_1[0]", "data_batch_1[1]", "data_batch_1[2]")


def test_select_batch_too_large_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    src = BundledImages(num_classes=1000)

    def no_pixels(self: object, i: int) -> np.ndarray:
        raise AssertionError("pixels decoded before the size check")

    monkeypatch.setattr(BundledImages, "load", no_pixels)
    n = len(BUNDLED_NAMES)
    with pytest.raises(
        DatasetError,
        match=rf"^batch size {n + 1} requested but only {n} bundled images are available; valid: 1\.\.{n}$",
    ):
        select_batch(src, batch_size=n + 1, size=8)
    with pytest.raises(DatasetError, match=rf"only {n - 4} bundled images are available from offset 4"):
        select_batch(src, batch_size=n, size=8, offset=4)
    with pytest.raises(DatasetError, match=r"only 0 bundled images .*valid: none \(lower the offset"):
        select_batch(src, batch_size=1, size=8, offset=n)
    with pytest.raises(DatasetError, match=r"only 4 distinct labels occur.*valid: 1\.\.4, or pass distinct_labels"):
        select_batch(BundledImages(num_classes=4), batch_size=5, size=8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0, "size": 8}, "batch_size must be a positive int, got 0"),
        ({"batch_size": 1, "size": -1}, "size must be a positive int"),
        ({"batch_size": 1, "size": 8, "offset": -1}, "offset must be an int >= 0"),
    ],
)
def test_select_batch_bad_arguments(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        select_batch(BundledImages(num_classes=10), **kwargs)


def test_batch_rejects_duplicates_and_empty() -> None:
    src = BundledImages(num_classes=10)
    with pytest.raises(DatasetError, match="indices must be distinct"):
        src.batch([0, 0], 8)
    with pytest.raises(DatasetError, match="no image indices"):
        src.batch([], 8)


def test_disjoint_pool_by_names_and_indices() -> None:
    src = BundledImages(num_classes=10)
    client = select_batch(src, batch_size=2, size=8, offset=1)  # chelsea, coffee
    pool = disjoint_pool(src, exclude=client.names, count=3, size=8)
    assert pool.names == ("astronaut", "rocket", "bus")
    assert not set(pool.names) & set(client.names)
    assert disjoint_pool(src, exclude=[1, 2], count=3, size=8).names == pool.names
    assert disjoint_pool(src, exclude=[], count=1, size=8).names == ("astronaut",)


def test_disjoint_pool_errors() -> None:
    src = BundledImages(num_classes=10)
    n = len(BUNDLED_NAMES)
    with pytest.raises(
        DatasetError, match=rf"{n - 1} auxiliary images requested but only {n - 2} bundled images remain"
    ):
        disjoint_pool(src, exclude=[0, 1], count=n - 1, size=8)
    with pytest.raises(DatasetError, match=r"exclude names \['nope'\] are not images of bundled"):
        disjoint_pool(src, exclude=["nope"], count=1, size=8)
    with pytest.raises(DatasetError, match="not a mix"):
        disjoint_pool(src, exclude=[0, "astronaut"], count=1, size=8)  # type: ignore[list-item]
    with pytest.raises(DatasetError, match="out of range"):
        disjoint_pool(src, exclude=[99], count=1, size=8)


def test_image_batch_validates() -> None:
    images = torch.zeros(2, 3, 4, 4)
    ImageBatch(images=images, labels=torch.tensor([0, 1]), names=("a", "b"))
    with pytest.raises(DatasetError, match="names must hold 2 entries"):
        ImageBatch(images=images, labels=torch.tensor([0, 1]), names=("a",))
    with pytest.raises(DatasetError, match="labels must be an int64 tensor of shape"):
        ImageBatch(images=images, labels=torch.tensor([0.0, 1.0]), names=("a", "b"))
    with pytest.raises(DatasetError, match=r"images must be \(B, 3, S, S\)"):
        ImageBatch(images=torch.zeros(3, 4, 4), labels=torch.tensor([0]), names=("a",))
