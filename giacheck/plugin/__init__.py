"""pytest plugin (``pytest11`` entry point ``giacheck.plugin``): options, markers, the ``gia`` fixture,
baselines, summary, GPUs.

Workers run cases and attach their records to the test report (``user_properties``: plain JSON strings and
floats), so xdist carries them to the controller. Only the controller writes (:mod:`.controller`). The plugin
changes nothing in a session that runs no giacheck case: CPU threads are set only in processes whose collection
uses the ``gia`` fixture (or when ``--giacheck-threads`` is given), folders are created only when a result is
written, and CUDA is queried only for items marked ``gpu``. Heavy imports (torch) happen inside the fixture, so
``pytest --help`` stays fast.

Modules: :mod:`.options` (option table), :mod:`.fixture` (``gia``), :mod:`.controller` (records, journal,
baselines, summary), :mod:`.xdist` (GPU pinning, shared cases), :mod:`.hooks` (hooks for other plugins).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from giacheck.plugin import hooks
from giacheck.plugin.controller import CONTROLLER, Controller
from giacheck.plugin.fixture import GiaFixture, gia
from giacheck.plugin.options import add_options, given, option, set_cpu_threads, validate, validate_attack
from giacheck.plugin.xdist import XdistHooks, pin_worker_gpu, visible_gpus

__all__ = ["GiaFixture", "gia", "option", "pytest_addoption", "pytest_configure", "visible_gpus"]

MARKERS = (
    "gpu: needs a CUDA device; skipped with a reason where torch finds none",
    "slow: longer than a smoke-profile case; deselect with -m 'not slow'",
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    add_options(parser)
    # here, not in pytest_configure: xdist asks for ``-n auto`` in pytest_cmdline_main, before configure
    if importlib.util.find_spec("xdist") is not None and not pluginmanager.has_plugin("giacheck-xdist"):
        pluginmanager.register(XdistHooks(), "giacheck-xdist")


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    validate(config)
    set_cpu_threads(config, explicit_only=True)
    worker = getattr(config, "workerinput", None)  # set by xdist on workers only (env vars leak into pytester)
    if worker is not None:
        pin_worker_gpu(config, str(worker.get("workerid", "")))
    else:
        controller = Controller(config)
        config.stash[CONTROLLER] = controller
        config.pluginmanager.register(controller, "giacheck-controller")


def pytest_collection_finish(session: pytest.Session) -> None:
    """A process about to run giacheck cases gets its CPU threads (default 1, what baselines are recorded with)
    and, outside xdist, has ``--giacheck-attack`` checked against the attack registry (every conftest is loaded
    by now) and the recorded baselines of the suites collected validated. An xdist worker cannot stop the run with
    a usage error: there each case reports an unknown name, and each claim its corrupt baseline before it runs."""
    items = [item for item in session.items if "gia" in getattr(item, "fixturenames", ())]
    if items:
        set_cpu_threads(session.config)
        if not hasattr(session.config, "workerinput"):
            validate_attack(session.config)
            validate_baselines(session.config, {Path(str(item.path)).stem for item in items})


def validate_baselines(config: pytest.Config, suites: set[str]) -> None:
    """Every baseline file under ``--giacheck-baselines`` of the ``suites`` collected parses and validates.

    Raises:
        pytest.UsageError: naming each corrupt file, the key and what is valid; the files are left untouched and
            nothing is run (not even under an update flag: a corrupt baseline is fixed or deleted by hand).
    """
    from giacheck.baselines import BaselineStore, read_baseline
    from giacheck.errors import BaselineError

    store = BaselineStore(option(config, "baselines"), option(config, "profile"))
    problems: list[str] = []
    for suite in sorted(suites):
        for path in store.suite_files(suite):
            try:
                read_baseline(path, case_id=path.stem)
            except BaselineError as exc:
                problems.append(str(exc))
    if problems:
        raise pytest.UsageError(f"{given(config, 'baselines')}: {len(problems)} recorded baseline(s) of the suites "
                                "collected cannot be used, so no test was run:\n" + "\n".join(problems))


_CUDA = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """``gpu`` items skip with a reason where CUDA is absent (torch asked once, only when such an item runs)."""
    if item.get_closest_marker("gpu") is None:
        return
    config = item.config
    if _CUDA not in config.stash:
        import torch

        config.stash[_CUDA] = torch.cuda.is_available()
    if not config.stash[_CUDA]:
        pytest.skip("marked gpu: needs a CUDA device, and torch finds none here")
