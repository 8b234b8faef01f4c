"""GPUs under pytest-xdist: ``-n auto`` counts GPUs, the controller pins one per worker, the workers share a
folder of finished cases (:mod:`giacheck.sharedcache`).

All of it applies only when the run asks for GPUs (``--giacheck-device`` other than cpu, or ``--giacheck-gpus``):
an unrelated project's ``-n auto`` and its workers' CUDA_VISIBLE_DEVICES are left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from giacheck.plugin.controller import CONTROLLER
from giacheck.plugin.options import option

__all__ = ["SHARED_KEY", "XdistHooks", "pin_worker_gpu", "visible_gpus", "wants_gpus"]

SHARED_KEY = "giacheck_shared_results"  # workerinput key: the run's shared-results folder


def wants_gpus(config: pytest.Config) -> bool:
    """Whether the run asked for GPUs (a CUDA device, or an explicit GPU list)."""
    return option(config, "device") != "cpu" or bool(option(config, "gpus"))


def visible_gpus(config: pytest.Config | None = None) -> list[str]:
    """GPU ids the run may use, without initializing CUDA: --giacheck-gpus, else CUDA_VISIBLE_DEVICES, else
    NVML's device count, else ``nvidia-smi -L``; empty when there are none."""
    explicit = option(config, "gpus") if config is not None else ""
    if explicit:
        return [g.strip() for g in explicit.split(",") if g.strip()]
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer is not None:
        return [g.strip() for g in outer.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def pin_worker_gpu(config: pytest.Config, worker: str) -> None:
    """Worker-side fallback when the controller did not pin (e.g. an old xdist): gwN takes GPU N mod count."""
    if not worker.startswith("gw") or os.environ.get("GIACHECK_PINNED_GPU") or not wants_gpus(config):
        return
    gpus = visible_gpus(None)
    if len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]
        os.environ["GIACHECK_PINNED_GPU"] = os.environ["CUDA_VISIBLE_DEVICES"]


class XdistHooks:
    """Hooks that exist only with pytest-xdist; registered only when it is installed (``optionalhook``: a run
    with ``-p no:xdist`` does not complain)."""

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        """``-n auto`` = the number of GPUs (counted without initializing CUDA); none found or none asked for:
        xdist's CPU count."""
        if not wants_gpus(config):
            return None
        gpus = visible_gpus(config)
        return len(gpus) if gpus else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: list[Any]) -> None:
        """One GPU per worker, set on the controller before workers start (before their conftests import torch)."""
        if not wants_gpus(config):
            return
        gpus = visible_gpus(config)
        if not gpus:
            return
        if len(specs) > len(gpus) and not config.getoption("giacheck_oversubscribe"):
            raise pytest.UsageError(
                f"{len(specs)} xdist workers but only {len(gpus)} GPUs ({','.join(gpus)}): use -n {len(gpus)} "
                "(or -n auto), or pass --giacheck-oversubscribe to share GPUs round-robin")
        for index, spec in enumerate(specs):  # spec.env survives a worker restart: the same spec is reused
            spec.env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
            spec.env["GIACHECK_PINNED_GPU"] = gpus[index % len(gpus)]

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Hand every xdist worker (restarted ones too) the run's shared-results folder."""
        controller = node.config.stash.get(CONTROLLER, None)
        if controller is not None:
            node.workerinput[SHARED_KEY] = str(controller.shared_folder())
