"""Tests for giacheck.data.pool: the held-out re-identification pool (views, order, disjointness, errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from giacheck.data import BUNDLED_NAMES, ImageFolderImages, heldout_pool, open_source, to_tensor_resized
from giacheck.data.pool import POOL_LIMIT, VIEWS_PER_IMAGE, view_names
from giacheck.errors import DatasetError


def base_name(view: str) -> str:
    """The source image a view was cut from: the name before the bracketed view tag."""
    return view[: view.rindex("[")] if view.endswith("]") else view


@pytest.fixture(scope="module")
def bundled():
    return open_source("bundled", num_classes=1000)


@pytest.fixture(scope="module")
def bundled_pool(bundled):
    """The default pool for the client image ``chelsea`` at 32 px (11 images x 42 views, cut at 256)."""
    return heldout_pool(bundled, exclude=["chelsea"], size=32)


class CountingFolder(ImageFolderImages):
    """An ImageFolder source that records which images were decoded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loaded: list[int] = []

    def load(self, i: int) -> np.ndarray:
        self.loaded.append(i)
        return super().load(i)


@pytest.fixture
def folder(tmp_path: Path) -> CountingFolder:
    """Four textured images in two classes, of different sizes (portrait, landscape, odd sides)."""
    rng = np.random.default_rng(0)
    for rel, (h, w) in {"a/x.png": (40, 52), "a/y.png": (37, 37), "b/z.png": (61, 45), "b/w.png": (33, 48)}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return CountingFolder(tmp_path)


# ------------------------------------------------------------------------------------------------- views, order
def test_view_names_and_count() -> None:
    names = view_names("chelsea")
    assert len(names) == VIEWS_PER_IMAGE == 42 == len(set(names))
    assert names[:2] == ["chelsea", "chelsea[flip]"]
    assert "chelsea[crop0.85-tl]" in names and "chelsea[crop0.4-c,flip]" in names
    crops = [n for n in names[2:] if not n.endswith(",flip]")]
    assert len(crops) == 20 and names[22:] == [c[:-1] + ",flip]" for c in crops]  # flipped crops come last
    assert {base_name(n) for n in names} == {"chelsea"}
    # any prefix of the crops is spread over scales and places
    assert {n.split("-")[0] for n in crops[:4]} == {f"chelsea[crop{s}" for s in ("0.85", "0.7", "0.55", "0.4")}
    assert {n.split("-")[1] for n in crops[:5]} == {"tl]", "tr]", "bl]", "br]", "c]"}


def test_all_views_of_every_remaining_image_in_view_major_order(folder: CountingFolder) -> None:
    pool = heldout_pool(folder, exclude=["a/y.png"], size=16)
    kept = ["a/x.png", "b/w.png", "b/z.png"]  # source order (sorted within class folders), y excluded
    assert pool.images.shape == (3 * VIEWS_PER_IMAGE, 3, 16, 16)
    assert pool.images.dtype == torch.float32
    assert float(pool.images.min()) >= 0.0 and float(pool.images.max()) <= 1.0
    expected = [view_names(k)[v] for v in range(VIEWS_PER_IMAGE) for k in kept]
    assert list(pool.names) == expected
    index = {folder.image_name(i): i for i in range(len(folder))}
    assert pool.labels.tolist() == [folder.label(index[base_name(n)]) for n in pool.names]
    assert pool.labels.dtype == torch.int64


def test_views_are_the_clients_preprocessing(folder: CountingFolder) -> None:
    pool = heldout_pool(folder, exclude=[], size=16)
    at = {name: pool.images[k] for k, name in enumerate(pool.names)}
    client = folder.batch([0], 16).images[0]  # a/x.png as the client would see it
    assert torch.equal(at["a/x.png"], client)
    assert torch.equal(at["a/x.png[flip]"], client.flip(-1))
    img = folder.load(0)  # 40 x 52: crops are squares of the shorter side times the scale
    side = round(40 * 0.55)
    assert torch.equal(at["a/x.png[crop0.55-br]"], to_tensor_resized(np.ascontiguousarray(img[-side:, -side:]), 16))
    assert torch.equal(at["a/x.png[crop0.55-br,flip]"], at["a/x.png[crop0.55-br]"].flip(-1))
    side = round(40 * 0.85)
    top, left = (40 - side) // 2, (52 - side) // 2
    centre = to_tensor_resized(np.ascontiguousarray(img[top : top + side, left : left + side]), 16)
    assert torch.equal(at["a/x.png[crop0.85-c]"], centre)
    assert not torch.equal(at["a/x.png[crop0.85-tl]"], at["a/x.png[crop0.85-br]"])


def test_limit_keeps_full_frames_first_and_is_a_prefix(folder: CountingFolder) -> None:
    full = heldout_pool(folder, exclude=[], size=12)
    for limit in (1, 3, 4, 6, 9, 50):
        pool = heldout_pool(folder, exclude=[], size=12, limit=limit)
        assert len(pool.names) == limit
        assert pool.names == full.names[:limit]
        assert torch.equal(pool.images, full.images[:limit])
    pool = heldout_pool(folder, exclude=[], size=12, limit=6)
    assert list(pool.names[:4]) == [folder.image_name(i) for i in range(4)]  # every full frame
    assert all(n.endswith("[flip]") for n in pool.names[4:])
    # crops round-robin: no image gets two more views than another
    pool = heldout_pool(folder, exclude=[], size=12, limit=4 * 5 + 3)
    counts = [sum(base_name(n) == folder.image_name(i) for n in pool.names) for i in range(4)]
    assert max(counts) - min(counts) <= 1


def test_determinism(folder: CountingFolder) -> None:
    one = heldout_pool(folder, exclude=["b/z.png"], size=16, limit=40)
    two = heldout_pool(folder, exclude=["b/z.png"], size=16, limit=40)
    assert one.names == two.names and torch.equal(one.images, two.images) and torch.equal(one.labels, two.labels)


def test_excluded_images_are_never_decoded(folder: CountingFolder) -> None:
    heldout_pool(folder, exclude=["a/x.png", "b/z.png"], size=16)
    banned = {i for i in range(len(folder)) if folder.image_name(i) in ("a/x.png", "b/z.png")}
    assert folder.loaded and not banned & set(folder.loaded)
    assert len(folder.loaded) == len(set(folder.loaded))  # each image decoded once, however many views
    folder.loaded.clear()
    heldout_pool(folder, exclude=[], size=16, limit=2)  # only the first two images contribute
    assert sorted(folder.loaded) == [0, 1]


# ------------------------------------------------------------------------------------------------------ bundled
def test_bundled_pool_is_disjoint_and_limited(bundled, bundled_pool) -> None:
    pool = bundled_pool
    assert POOL_LIMIT == 256 and pool.images.shape == (256, 3, 32, 32)
    assert float(pool.images.min()) >= 0.0 and float(pool.images.max()) <= 1.0
    kept = [n for n in BUNDLED_NAMES if n != "chelsea"]
    assert list(pool.names[:11]) == kept  # every image's full frame first
    assert list(pool.names[11:22]) == [f"{n}[flip]" for n in kept]
    bases = {base_name(n) for n in pool.names}
    assert bases == set(kept)  # nothing derived from the excluded image, every other image present
    assert len(set(pool.names)) == len(pool.names)
    assert pool.labels.tolist() == [BUNDLED_NAMES.index(base_name(n)) for n in pool.names]


def test_bundled_pool_excludes_client_and_auxiliary(bundled, bundled_pool) -> None:
    exclude = ["astronaut", "chelsea", "coffee", "rocket", "bus", "zidane", "motorcycle", "logo"]
    pool = heldout_pool(bundled, exclude=exclude, size=32)
    kept = [n for n in BUNDLED_NAMES if n not in exclude]
    assert len(pool.names) == 4 * VIEWS_PER_IMAGE == 168
    assert {base_name(n) for n in pool.names} == set(kept)
    # the same views as in the larger pool, rendered the same way
    at = {n: pool.images[k] for k, n in enumerate(pool.names)}
    for k, n in enumerate(bundled_pool.names):
        if n in at:
            assert torch.equal(at[n], bundled_pool.images[k])


# ------------------------------------------------------------------------------------------------------- errors
def test_errors(folder: CountingFolder) -> None:
    with pytest.raises(DatasetError, match=r"exclude names \['a/q.png'\] are not images of .*valid names"):
        heldout_pool(folder, exclude=["a/x.png", "a/q.png"], size=16)
    with pytest.raises(DatasetError, match=r"no image of .* is left"):
        heldout_pool(folder, exclude=[folder.image_name(i) for i in range(4)], size=16)
    with pytest.raises(DatasetError, match="the string"):
        heldout_pool(folder, exclude="a/x.png", size=16)
    with pytest.raises(DatasetError, match="image names"):
        heldout_pool(folder, exclude=[0], size=16)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(DatasetError, match="size must be a positive int"):
            heldout_pool(folder, exclude=[], size=bad)
        with pytest.raises(DatasetError, match="limit must be a positive int"):
            heldout_pool(folder, exclude=[], size=16, limit=bad)
    assert folder.loaded == []  # every check runs before any pixel is decoded


def test_unknown_bundled_name_suggests_close_match(bundled) -> None:
    with pytest.raises(DatasetError, match="Did you mean: chelsea"):
        heldout_pool(bundled, exclude=["chelsee"], size=32)
