"""pytest plugin (``pytest11`` entry point): options, markers, the ``gia`` fixture, baselines, summary, GPUs.

Workers run cases and attach their numbers to the test report (``user_properties``: plain JSON strings and
floats), so xdist carries them to the controller. Only the controller writes: each finished result is
appended to ``results.jsonl`` the moment its report arrives (a crashed worker loses no finished result),
baselines are rewritten under ``--giacheck-update[-all]``, and at the end come ``results.json`` and the
summary table. Heavy imports (torch) happen inside the fixture, so ``pytest --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from giacheck import claims
from giacheck.baselines import BaselineStore
from giacheck.errors import BaselineError
from giacheck.jsonio import write_json_atomic
from giacheck.sharedcache import SharedResults

__all__ = ["GiaFixture", "pytest_addoption", "pytest_configure", "visible_gpus"]

MARKERS = (
    "gia_case(case_id): the gradient-inversion case a test runs (for selection with -m/-k and reports)",
    "gpu: needs a CUDA device; skipped with a reason on machines without one",
    "slow: longer than a smoke-profile case",
)
PROPERTY = "giacheck"  # user_properties key carrying one case's JSON payload


@dataclass(frozen=True, slots=True)
class _Opt:
    name: str
    help: str
    default: Any
    kind: str = "string"  # ini type


OPTIONS = (
    _Opt("profile", "attack budget: smoke (CPU, CI) or paper (GPU)", "smoke"),
    _Opt("device", "torch device for attacks: cpu, cuda, cuda:N (default: cpu)", "cpu"),
    _Opt("artifacts", "folder for per-case PNG/JSON and results.json", "giacheck-artifacts"),
    _Opt("baselines", "root folder of recorded baselines", "baselines"),
    _Opt("tolerance", "baseline tolerance on SSIM", "0.05"),
    _Opt("gpus", "comma-separated GPU ids for xdist workers (default: CUDA_VISIBLE_DEVICES or all found)", ""),
    _Opt("threads", "torch CPU threads per process: a number, or 'auto' (cores / workers). Baselines are "
                    "recorded with 1: float reductions, and so chaotic attacks, depend on the thread count", "1"),
    _Opt("trials", "Optuna trials per tuned case (paper profile)", "0"),
    _Opt("storage", "Optuna storage URL or journal file shared by machines", ""),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("giacheck", "gradient-inversion privacy tests")
    for opt in OPTIONS:
        group.addoption(f"--giacheck-{opt.name}", dest=f"giacheck_{opt.name}", default=None,
                        help=f"{opt.help} (ini: giacheck_{opt.name})")
        parser.addini(f"giacheck_{opt.name}", opt.help, default=opt.default)
    group.addoption("--giacheck-update", action="store_true", dest="giacheck_update",
                    help="rewrite the baselines of the cases run, and fail them (review the diff, then rerun)")
    group.addoption("--giacheck-update-all", action="store_true", dest="giacheck_update_all",
                    help="rewrite the baselines of the cases run, and pass")
    group.addoption("--giacheck-oversubscribe", action="store_true", dest="giacheck_oversubscribe",
                    help="allow more xdist workers than GPUs (workers share GPUs round-robin)")


def option(config: pytest.Config, name: str) -> str:
    """Option value with precedence CLI > ini > default."""
    value = config.getoption(f"giacheck_{name}")
    return value if value is not None else config.getini(f"giacheck_{name}")


_CONTROLLER = pytest.StashKey["_Controller"]()


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    profile = option(config, "profile")
    if profile not in ("smoke", "paper"):
        raise pytest.UsageError(f"--giacheck-profile={profile!r}: valid values are 'smoke' and 'paper'")
    try:
        float(option(config, "tolerance"))
    except ValueError:
        raise pytest.UsageError(f"--giacheck-tolerance={option(config, 'tolerance')!r} is not a number") from None
    threads = option(config, "threads")
    if threads != "auto" and not (threads.isdigit() and int(threads) > 0):
        raise pytest.UsageError(f"--giacheck-threads={threads!r}: give a positive number or 'auto'")
    worker = getattr(config, "workerinput", None)  # set by xdist on workers only (env vars leak into pytester)
    workers = int(worker.get("workercount", 1)) if worker is not None else 1
    _set_cpu_threads(threads, workers)
    if worker is not None:
        _pin_worker_gpu(str(worker.get("workerid", "")))
    else:
        controller = _Controller(config)
        config.stash[_CONTROLLER] = controller
        config.pluginmanager.register(controller, "giacheck-controller")


# ------------------------------------------------------------------------------------------------ CPU and GPUs
def _set_cpu_threads(threads: str, workers: int) -> None:
    """Give torch a fixed number of CPU threads (``auto``: its share of the cores, so N workers do not thrash).

    Set before torch is imported (the plugin loads first), so OpenMP reads it; an explicit OMP_NUM_THREADS wins.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    count = max(1, (os.cpu_count() or 1) // max(1, workers)) if threads == "auto" else int(threads)
    os.environ["OMP_NUM_THREADS"] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


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


# xdist hooks: optional (no error without xdist); auto_num_workers runs before pytest_configure, so module level.
@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` = the number of GPUs (counted without initializing CUDA); none found: xdist's CPU count."""
    gpus = visible_gpus(config)
    return len(gpus) if gpus else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """One GPU per worker, set on the controller before workers start (before their conftests import torch)."""
    if option(config, "device") == "cpu" and not option(config, "gpus"):
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


def _pin_worker_gpu(worker: str) -> None:
    """Worker-side fallback when the controller did not pin (e.g. an old xdist): gwN takes GPU N mod count."""
    if not worker.startswith("gw") or os.environ.get("GIACHECK_PINNED_GPU"):
        return
    gpus = visible_gpus(None)
    if len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]
        os.environ["GIACHECK_PINNED_GPU"] = os.environ["CUDA_VISIBLE_DEVICES"]


# ------------------------------------------------------------------------------------------------ the fixture
@dataclass(slots=True)
class _Cached:
    """A case's result in this worker: how long it took, who computed it, the suites it has artifacts in."""

    result: Any
    wall_s: float
    origin: str  # "computed" (here) or "another worker"
    saved_in: set[Path] = field(default_factory=set)


@dataclass
class GiaFixture:
    """Runs cases for one test and asserts claims plus the recorded baseline; returns :class:`Result` objects."""

    config: pytest.Config
    item: pytest.Item
    cache: dict[str, _Cached]
    suite: str
    baselines_root: Path | None = None  # a pack's own baselines folder; None: --giacheck-baselines
    shared: SharedResults | None = None  # under xdist: cases finished by any worker of this run
    failures: list[str] = field(default_factory=list)

    @property
    def profile(self) -> str:
        return option(self.config, "profile")

    @property
    def device(self) -> str:
        return option(self.config, "device")

    def require_profile(self, profile: str, why: str) -> None:
        """Skip with a reason naming the profile this claim needs (e.g. canonical resolutions need ``paper``)."""
        if self.profile != profile:
            pytest.skip(f"needs the {profile!r} profile: {why}")

    def run(self, case_id: str, **kwargs: Any):
        """Run one case under the session's profile and device, or reuse it: computed once per worker, and
        under xdist once per run (:mod:`giacheck.sharedcache`)."""
        from giacheck.artifacts import save_result
        from giacheck.runner import Result, run_case

        if self.profile == "paper" and self.device == "cpu":
            pytest.skip("the paper profile needs a GPU: pass --giacheck-device cuda (profile 'smoke' runs on CPU)")
        key = json.dumps([case_id, self.profile, self.device, sorted(kwargs.items())], default=str)
        if key not in self.cache:
            def compute() -> tuple[Any, float]:
                start = time.perf_counter()
                return run_case(case_id, profile=self.profile, device=self.device, **kwargs), \
                    time.perf_counter() - start

            if self.shared is None:
                result, wall, reused = (*compute(), False)
            else:  # stored as plain values and tensors, so that workers load it with weights_only=True
                state, wall, reused = self.shared.get_or_compute(key, lambda: _as_state(*compute()))
                result = Result.from_state(state)
            self.cache[key] = _Cached(result, wall, "another worker" if reused else "computed")
        cached = self.cache[key]
        folder = Path(option(self.config, "artifacts")) / self.profile / self.suite
        if folder not in cached.saved_in:  # a case shared by two suites (or a pack's control) gets its PNG in each
            save_result(cached.result, folder)
            cached.saved_in.add(folder)
        return cached.result

    def feasible(self, case_id: str, *, min_ssim: float, **kwargs: Any):
        result = self.run(case_id, **kwargs)
        self._conclude(result, claims.feasible(case_id, result.ssim_mean, min_ssim=min_ssim), positive=True)
        return result

    def infeasible(self, case_id: str, *, max_ssim: float, control: str, control_min_ssim: float, **kwargs: Any):
        """Fails as *inconclusive* when ``control`` does not reconstruct under the same budget."""
        control_result = self.run(control, **kwargs)
        control_claim = claims.feasible(control, control_result.ssim_mean, min_ssim=control_min_ssim)
        result = self.run(case_id, **{**kwargs, **self._tuned(case_id, kwargs)})
        claim = claims.infeasible(case_id, result.ssim_mean, max_ssim=max_ssim, control=control_claim)
        self._conclude(result, claim, positive=False)
        return result

    def ordering(self, high: str, low: str, *, margin: float, min_high: float = 0.0,
                 **kwargs: Any) -> claims.ClaimResult:
        """``high`` leaks more than ``low`` by ``margin``; inconclusive when ``high`` is below ``min_high``."""
        a, b = self.run(high, **kwargs), self.run(low, **kwargs)
        claim = claims.ordering(high, a.ssim_mean, low, b.ssim_mean, margin=margin, min_high=min_high)
        for result in (a, b):
            self._record(result, claim, self._baseline(result, positive=False))
        if not claim.passed:
            self.failures.append(claim.message)
        self._finish()
        return claim

    def regression(self, case_id: str, **kwargs: Any):
        """No feasibility verdict at this budget (labelled so): only the baseline is checked."""
        result = self.run(case_id, **kwargs)
        self._conclude(result, claims.regression(case_id, result.ssim_mean), positive=False)
        return result

    def pack_control(self, pack: Any):
        """A pack's positive control: it must reconstruct (and not get weaker than recorded), or the pack's
        infeasibility rules prove nothing."""
        self._use_pack(pack)
        result = self.run(pack.control_id, **pack.run_options())
        self._conclude(result, pack.control_claim(result.ssim_mean), positive=True)
        return result

    def pack_case(self, pack: Any, case_id: str):
        """One configuration of a pack: the strictest rule that applies (conclusive only with the control
        reconstructing under the same budget), or a regression; and its recorded baseline (one-sided)."""
        self._use_pack(pack)
        kwargs = pack.run_options()
        control = None
        if pack.rules_for(case_id):
            control = pack.control_claim(self.run(pack.control_id, **kwargs).ssim_mean)
        result = self.run(case_id, **kwargs)
        self._conclude(result, pack.judge(case_id, result.ssim_mean, control), positive=False)
        return result

    def _use_pack(self, pack: Any) -> None:
        """Baselines and artifacts of a pack live under its own name (and its own folder, when it has one)."""
        pack.register()
        self.suite = pack.name
        self.baselines_root = pack.baselines

    def _tuned(self, case_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """With ``--giacheck-trials N`` a negative claim is tested after tuning the attack (Appendix A):
        Optuna TPE over λ_TV, λ_BN and lr, selected by the attack's own gradient distance (no ground truth)."""
        trials = int(option(self.config, "trials") or 0)
        if trials < 1 or "attack" in kwargs:
            return {}
        from giacheck.tuning import tune

        tuned = tune(case_id, profile=self.profile, trials=trials, device=self.device,
                     storage=option(self.config, "storage") or None)
        self.item.user_properties.append((f"tuning[{case_id}]", json.dumps(tuned.to_dict(), allow_nan=False)))
        return {"attack": tuned.best_attack}

    # -- internals
    def _conclude(self, result: Any, claim: claims.ClaimResult, *, positive: bool) -> None:
        baseline = self._baseline(result, positive=positive)
        self._record(result, claim, baseline)
        if not claim.passed:
            self.failures.append(claim.message)
        self._finish()

    def _baseline(self, result: Any, *, positive: bool) -> dict[str, Any]:
        store = BaselineStore(self._baselines_root(), self.profile)
        path = store.path(self.suite, result.case_id)
        try:
            recorded = store.load(self.suite, result.case_id)
        except BaselineError as exc:
            self.failures.append(str(exc))
            return {"status": "corrupt", "path": str(path)}
        if self.config.getoption("giacheck_update") or self.config.getoption("giacheck_update_all"):
            if not self.config.getoption("giacheck_update_all"):
                self.failures.append(f"{result.case_id}: baseline rewritten at {path} (--giacheck-update); review "
                                     "the diff and rerun without the flag")
            return {"status": "updated", "path": str(path),
                    "recorded": recorded["ssim"]["mean"] if recorded else None}
        if recorded is None:
            self.failures.append(f"{result.case_id}: no baseline recorded at {path}; record it with "
                                 "--giacheck-update (or --giacheck-update-all) and commit the file")
            return {"status": "missing", "path": str(path)}
        check = claims.baseline_check(result.case_id, result.ssim_mean, recorded=recorded["ssim"]["mean"],
                                      tolerance=float(option(self.config, "tolerance")), positive=positive)
        if not check.passed:
            self.failures.append(check.message)
        return {"status": str(check.verdict), "path": str(path), "recorded": recorded["ssim"]["mean"]}

    def _baselines_root(self) -> Path:
        return self.baselines_root or Path(option(self.config, "baselines"))

    def _record(self, result: Any, claim: claims.ClaimResult, baseline: dict[str, Any]) -> None:
        cached = next(c for c in self.cache.values() if c.result is result)
        payload = {
            "suite": self.suite, "case_id": result.case_id, "profile": self.profile, "claim": claim.kind,
            "verdict": str(claim.verdict), "message": claim.message, "baseline": baseline,
            "wall_s": cached.wall_s, "origin": cached.origin, "nodeid": self.item.nodeid,
            "result": result.to_dict(),
            "baselines_root": str(self._baselines_root()),
        }
        self.item.user_properties.append((PROPERTY, json.dumps(payload, allow_nan=False)))
        self.item.user_properties.append((f"ssim_mean[{result.case_id}]", result.ssim_mean))
        self.item.user_properties.append((f"ssim_max[{result.case_id}]", result.ssim_max))

    def _finish(self) -> None:
        __tracebackhide__ = True
        if self.failures:
            messages, self.failures = self.failures, []
            pytest.fail("\n".join(messages), pytrace=False)


def _as_state(result: Any, wall: float) -> tuple[dict[str, Any], float]:
    return result.to_state(), wall


_CACHE = pytest.StashKey[dict]()
_SHARED_KEY = "giacheck_shared_results"  # workerinput key: the run's shared-results folder


@pytest.fixture
def gia(request: pytest.FixtureRequest) -> GiaFixture:
    """Run gradient-inversion cases and assert claims against recorded baselines."""
    config = request.config
    cache = config.stash.setdefault(_CACHE, {})
    suite = Path(str(request.node.path)).stem
    folder = getattr(config, "workerinput", {}).get(_SHARED_KEY)
    return GiaFixture(config=config, item=request.node, cache=cache, suite=suite,
                      shared=SharedResults(Path(folder)) if folder else None)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand every xdist worker (restarted ones too) the run's shared-results folder."""
    controller = node.config.stash.get(_CONTROLLER, None)
    if controller is None:
        return
    controller.shared_folder.mkdir(parents=True, exist_ok=True)
    node.workerinput[_SHARED_KEY] = str(controller.shared_folder)


# ------------------------------------------------------------------------------------------------ controller
class _Controller:
    """Collects payloads from reports (local or from xdist workers), writes results and baselines."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.folder = Path(option(config, "artifacts"))
        self.journal = self.folder / "results.jsonl"
        self.started = False
        self.shared_folder = self.folder / ".shared" / f"run-{os.getpid()}-{time.time_ns()}"

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":  # teardown reports carry the same user_properties again
            return
        for name, value in report.user_properties:
            if name != PROPERTY:
                continue
            payload = json.loads(value)
            payload["outcome"] = report.outcome
            self.rows.append(payload)
            self._journal(payload)
            if self.config.getoption("giacheck_update") or self.config.getoption("giacheck_update_all"):
                self._write_baseline(payload)

    def _journal(self, payload: dict[str, Any]) -> None:
        """Append at once: whatever happens to workers later, finished results are on disk."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.started:
            self.journal.write_text("")
            self.started = True
        with self.journal.open("a") as fh:
            fh.write(json.dumps(payload, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _write_baseline(self, payload: dict[str, Any]) -> None:
        store = BaselineStore(payload.get("baselines_root") or option(self.config, "baselines"), payload["profile"])
        try:
            store.write(payload["suite"], payload["case_id"], payload["result"])
        except BaselineError as exc:
            self.errors.append(str(exc))

    @pytest.hookimpl
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        shutil.rmtree(self.shared_folder, ignore_errors=True)  # only this run's folder: others may be running
        with contextlib.suppress(OSError):
            self.shared_folder.parent.rmdir()  # and .shared/ itself once no run uses it

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.rows:
            return
        unique = {(r["suite"], r["case_id"]): r for r in self.rows}
        write_json_atomic({"profile": option(self.config, "profile"), "cases": list(unique.values())},
                          self.folder / "results.json")

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("giacheck summary")
        unique = {(r["suite"], r["case_id"]): r for r in self.rows}
        header = f"{'case id':52} {'claim':12} {'SSIM mean':>9} {'max':>6} {'patch*':>6} {'baseline':>8} " \
                 f"{'verdict':>19} {'wall s':>7}"
        tr.write_line(header)
        for row in unique.values():
            res, base = row["result"], row["baseline"]
            recorded = base.get("recorded")
            verdict = claims.shown_verdict(row["claim"], row["verdict"], row["outcome"])
            tr.write_line(
                f"{row['case_id'][:52]:52} {row['claim']:12} {res['ssim']['mean']:9.3f} {res['ssim']['max']:6.3f} "
                f"{res['secondary']['patch_matched_ssim']['mean']:6.3f} "
                f"{(f'{recorded:.3f}' if recorded is not None else base['status']):>8} {verdict:>19} "
                f"{row['wall_s']:7.1f}")
        tr.write_line("* patch: secondary, permutation-tolerant SSIM (patches matched); claims use standard SSIM")
        tr.write_line(f"results: {self.folder / 'results.json'}")
        self._report_orphans(tr, unique)
        for error in self.errors:
            tr.write_line(f"baseline not written: {error}", red=True)

    def _report_orphans(self, tr: Any, unique: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Baselines of the suites run whose case did not run: orphaned if the case is gone (or deselected)."""
        roots = {r["suite"]: r.get("baselines_root") or option(self.config, "baselines") for r in unique.values()}
        for suite in sorted(roots):
            store = BaselineStore(roots[suite], option(self.config, "profile"))
            for path in store.orphans(suite, [c for s, c in unique if s == suite]):
                tr.write_line(f"baseline without a case in this run (orphaned, or deselected): {path}")
