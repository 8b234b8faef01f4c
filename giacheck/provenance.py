"""Provenance recorded with every result: versions, device and CPU model, git revision, metric definition."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata

import torch

from giacheck import metrics
from giacheck.result import Manifest

__all__ = ["cpu_model", "manifest"]


def manifest(device: torch.device, seed: int, *, data: str, images: tuple[str, ...], model: str,
             seeds: dict[str, int] | None = None) -> Manifest:
    """Versions, device, seeds, git revision and the metric definition, recorded with every result."""
    versions = {"python": platform.python_version()}
    for package in ("giacheck", "torch", "timm", "ultralytics", "scikit-image", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return Manifest(versions=versions, device=str(device), device_name=device_name, seed=seed,
                    git_revision=_git_revision(), metric=metrics.metric_definition(), platform=sys.platform,
                    data=data, images=tuple(images), model=model, seeds=dict(seeds or {"attack": seed}))


def cpu_model() -> str:
    """The CPU's model name (float reductions, and so a chaotic attack's path, differ between CPU models: on
    the smoke budget SSIM moved by up to 0.05 between the recording machine and an AMD EPYC)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None

