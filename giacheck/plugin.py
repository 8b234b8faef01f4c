"""pytest plugin (loaded through the ``pytest11`` entry point): the ``giacheck`` option group and markers.

The suites' fixtures, claims, baselines and xdist GPU pinning build on this module (see the suites issue);
for now it registers the options and markers so that ``pytest --help`` documents them and stays fast.
"""

from __future__ import annotations

import os
import sys

import pytest

__all__ = ["pytest_addoption", "pytest_configure"]

MARKERS = {
    "gia_case(case_id, **kwargs): the gradient-inversion case a test runs",
    "gpu: needs a CUDA device; skipped with a reason on CPU-only machines",
    "slow: longer than a smoke-profile case",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("giacheck", "gradient-inversion privacy tests")
    group.addoption("--giacheck-profile", dest="giacheck_profile", default=None,
                    help="attack budget profile: smoke (CPU, default) or paper (GPU)")
    parser.addini("giacheck_profile", "default attack budget profile", default="smoke")
    group.addoption("--giacheck-device", dest="giacheck_device", default=None,
                    help="torch device for attacks (default: cpu)")
    parser.addini("giacheck_device", "default torch device for attacks", default="cpu")


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    _share_cpu_threads()


def _share_cpu_threads() -> None:
    """On an xdist worker, give torch its share of the cores: N workers × all cores each thrash the CPU.

    Set before torch is imported (the plugin loads first), so OpenMP reads it; an explicit OMP_NUM_THREADS wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 1 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def option(config: pytest.Config, name: str) -> str:
    """Option value with precedence CLI > ini > default."""
    value = config.getoption(f"giacheck_{name}")
    return value if value is not None else config.getini(f"giacheck_{name}")
