"""Per-case artifacts: an original | reconstruction PNG strip and the result as JSON, written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from giacheck.jsonio import write_bytes_atomic, write_json_atomic

__all__ = ["save_pair_png", "save_result", "write_json_atomic"]


def save_pair_png(original: torch.Tensor, reconstruction: torch.Tensor, path: Path, *, scale: int = 4) -> Path:
    """Save originals (top row) above their matched reconstructions (bottom row), upscaled ``scale``× nearest."""
    rows = [torch.cat(list(batch.clamp(0, 1)), dim=2) for batch in (original, reconstruction)]
    grid = torch.cat(rows, dim=1)  # (3, 2H, B·W)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(buffer.getvalue(), path)
    return path


def save_result(result: Any, out_dir: Path) -> dict[str, Path]:
    """Write ``<case-id>.png`` and ``<case-id>.json`` for a :class:`giacheck.runner.Result` under ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "png": save_pair_png(result.original, result.reconstruction, out_dir / f"{result.case_id}.png"),
        "json": write_json_atomic(result.to_dict(), out_dir / f"{result.case_id}.json"),
    }
