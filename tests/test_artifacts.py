"""Tests of giacheck.artifacts: the original | reconstruction PNG strip and atomic, sorted-key JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from giacheck.artifacts import save_pair_png, save_result, write_json_atomic


@pytest.mark.parametrize(("batch", "size", "scale"), [(1, 32, 4), (3, 8, 2), (2, 5, 1)])
def test_pair_png_size(tmp_path: Path, batch: int, size: int, scale: int) -> None:
    gen = torch.Generator().manual_seed(0)
    original = torch.rand(batch, 3, size, size, generator=gen)
    reconstruction = torch.rand(batch, 3, size, size, generator=gen)
    path = save_pair_png(original, reconstruction, tmp_path / "nested" / "pair.png", scale=scale)
    assert path == tmp_path / "nested" / "pair.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (batch * size * scale, 2 * size * scale)  # (width, height): B columns, 2 rows


def test_pair_png_layout(tmp_path: Path) -> None:
    """Originals on top, reconstruction j below original j, nearest upscaling, values clamped to [0, 1]."""
    original = torch.zeros(2, 3, 2, 2)
    original[0, 0] = 1.0  # red
    original[1, 2] = 1.0  # blue
    reconstruction = torch.zeros(2, 3, 2, 2)
    reconstruction[0, 1] = 2.0  # green, clamped to 1
    reconstruction[1] = -1.0  # black, clamped to 0
    path = save_pair_png(original, reconstruction, tmp_path / "pair.png", scale=3)
    with Image.open(path) as image:
        pixels = np.asarray(image)
    assert pixels.shape == (12, 12, 3)
    assert (pixels[:6, :6] == [255, 0, 0]).all()
    assert (pixels[:6, 6:] == [0, 0, 255]).all()
    assert (pixels[6:, :6] == [0, 255, 0]).all()
    assert (pixels[6:, 6:] == 0).all()


def test_json_sorted_keys_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "result.json"
    payload = {"zeta": 1, "alpha": {"y": 2.5, "b": [1, 2]}, "mid": None}
    assert write_json_atomic(payload, path) == path
    text = path.read_text()
    assert json.loads(text) == payload
    assert text == json.dumps(payload, indent=2, sort_keys=True) + "\n"
    assert text.index('"alpha"') < text.index('"mid"') < text.index('"zeta"')
    assert text.index('"b"') < text.index('"y"')
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_json_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic({"v": 1}, path)
    write_json_atomic({"v": 2}, path)
    assert json.loads(path.read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_json_failure_leaves_previous_content_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic({"v": 1, "ok": True}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic({"a": 1, "z": object()}, path)  # fails half-way through the dump
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_json_interrupted_write_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a KeyboardInterrupt half-way through the dump leaves no partial target and no temp file."""

    def interrupted_dump(obj: object, fh, **kwargs: object) -> None:
        fh.write('{"partial": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", interrupted_dump)  # the json module the writer calls
    path = tmp_path / "result.json"
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic({"ssim": 0.5}, path)
    assert list(tmp_path.iterdir()) == []


class _FakeResult:
    case_id = "lenet_sigmoid-32-bn_eval-bs2-stats_none"
    original = torch.rand(2, 3, 8, 8)
    reconstruction = torch.rand(2, 3, 8, 8)

    def to_dict(self) -> dict[str, object]:
        return {"case_id": self.case_id, "ssim": {"mean": 0.5}}


def test_save_result(tmp_path: Path) -> None:
    paths = save_result(_FakeResult(), tmp_path / "out")
    assert paths["png"] == tmp_path / "out" / f"{_FakeResult.case_id}.png"
    assert paths["json"] == tmp_path / "out" / f"{_FakeResult.case_id}.json"
    assert json.loads(paths["json"].read_text())["ssim"] == {"mean": 0.5}
    with Image.open(paths["png"]) as image:
        assert image.size == (2 * 8 * 4, 2 * 8 * 4)
