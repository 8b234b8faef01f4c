"""The ``gia`` fixture: runs cases for one test (cached per worker, shared across xdist workers), asserts
claims and the recorded baseline, and attaches each case's record to the test report (``user_properties``)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from giacheck import claims
from giacheck.plugin.controller import PROPERTY
from giacheck.plugin.options import option, set_cpu_threads, updating
from giacheck.plugin.xdist import SHARED_KEY
from giacheck.sharedcache import SharedResults

if TYPE_CHECKING:
    from giacheck.records import BaselineCheck, CaseRecord
    from giacheck.runner import Result
    from giacheck.specs import Case, RunOptions

__all__ = ["GiaFixture", "gia"]


@dataclass(slots=True)
class _Cached:
    """A case's result in this worker: how long it took, who computed it, the suites it has artifacts in."""

    result: Any
    wall_s: float
    origin: str  # "computed" (here) or "another worker"
    saved_in: set[Path] = field(default_factory=set)


@dataclass
class GiaFixture:
    """Runs cases for one test and asserts claims plus the recorded baseline; returns :class:`Result` objects.

    A case is a case id or a :class:`Case`; ``options`` (:class:`RunOptions`: seed, image source, budget) is
    the same for a claim's case and its control. A case that names no attack gets ``--giacheck-attack``.
    """

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

    def case(self, case: str | Case) -> Case:
        """``case`` parsed, with the session's ``--giacheck-attack`` when it names no attack itself."""
        from giacheck.specs import DEFAULT_ATTACK, Case

        parsed = Case.parse(case) if isinstance(case, str) else case
        attack = option(self.config, "attack")
        return dataclasses.replace(parsed, attack=attack) if attack and parsed.attack == DEFAULT_ATTACK else parsed

    def run(self, case: str | Case, *, options: RunOptions | None = None) -> Result:
        """Run one case under the session's profile and device, or reuse it: computed once per worker, and
        under xdist once per run (:mod:`giacheck.sharedcache`)."""
        from giacheck.artifacts import save_result
        from giacheck.specs import RunOptions

        if self.profile == "paper" and self.device == "cpu":
            pytest.skip("the paper profile needs a GPU: pass --giacheck-device cuda (profile 'smoke' runs on CPU)")
        case, options = self.case(case), options or RunOptions()
        key = json.dumps([case.id, self.profile, self.device, dataclasses.asdict(options)], sort_keys=True,
                         default=str)
        if key not in self.cache:
            self.cache[key] = self._compute(key, case, options)
        cached = self.cache[key]
        folder = Path(option(self.config, "artifacts")) / self.profile / self.suite
        if folder not in cached.saved_in:  # a case shared by two suites (or a pack's control) gets its PNG in each
            save_result(cached.result, folder)
            cached.saved_in.add(folder)
        return cached.result

    def _compute(self, key: str, case: Case, options: RunOptions) -> _Cached:
        from giacheck.runner import Result, run_case

        def compute() -> tuple[Result, float]:
            start = time.perf_counter()
            result = run_case(case, profile=self.profile, device=self.device, options=options)
            return result, time.perf_counter() - start

        if self.shared is None:
            result, wall = compute()
            return _Cached(result, wall, "computed")
        # stored as plain values and tensors, so that workers load it with weights_only=True
        state, wall, reused = self.shared.get_or_compute(key, lambda: _as_state(*compute()))
        return _Cached(Result.from_state(state), wall, "another worker" if reused else "computed")

    def feasible(self, case: str | Case, *, min_ssim: float, options: RunOptions | None = None) -> Result:
        result = self.run(case, options=options)
        self._conclude(result, claims.feasible(result.case_id, result.ssim_mean, min_ssim=min_ssim), positive=True)
        return result

    def infeasible(self, case: str | Case, *, max_ssim: float, control: str | Case, control_min_ssim: float,
                   options: RunOptions | None = None) -> Result:
        """Fails as *inconclusive* when ``control`` does not reconstruct under the same budget."""
        control_result = self.run(control, options=options)
        control_claim = claims.feasible(control_result.case_id, control_result.ssim_mean, min_ssim=control_min_ssim)
        result = self.run(case, options=self._tuned(case, options))
        claim = claims.infeasible(result.case_id, result.ssim_mean, max_ssim=max_ssim, control=control_claim)
        self._conclude(result, claim, positive=False)
        return result

    def ordering(self, high: str | Case, low: str | Case, *, margin: float, min_high: float = 0.0,
                 options: RunOptions | None = None) -> claims.ClaimResult:
        """``high`` leaks more than ``low`` by ``margin``; inconclusive when ``high`` is below ``min_high``."""
        a, b = self.run(high, options=options), self.run(low, options=options)
        claim = claims.ordering(a.case_id, a.ssim_mean, b.case_id, b.ssim_mean, margin=margin, min_high=min_high)
        for result in (a, b):
            self._record(result, claim, self._baseline(result, positive=False))
        if not claim.passed:
            self.failures.append(claim.message)
        self._finish()
        return claim

    def regression(self, case: str | Case, *, options: RunOptions | None = None) -> Result:
        """No feasibility verdict at this budget (labelled so): only the baseline is checked."""
        result = self.run(case, options=options)
        self._conclude(result, claims.regression(result.case_id, result.ssim_mean), positive=False)
        return result

    def pack_control(self, pack: Any) -> Result:
        """A pack's positive control: it must reconstruct (and not get weaker than recorded), or the pack's
        infeasibility rules prove nothing."""
        self._use_pack(pack)
        result = self.run(pack.control_id, options=pack.run_options())
        self._conclude(result, pack.control_claim(result.ssim_mean), positive=True)
        return result

    def pack_case(self, pack: Any, case_id: str) -> Result:
        """One configuration of a pack: the strictest rule that applies (conclusive only with the control
        reconstructing under the same budget), or a regression; and its recorded baseline (one-sided)."""
        self._use_pack(pack)
        options = pack.run_options()
        control = None
        if pack.rules_for(case_id):
            control = pack.control_claim(self.run(pack.control_id, options=options).ssim_mean)
        result = self.run(case_id, options=options)
        self._conclude(result, pack.judge(case_id, result.ssim_mean, control), positive=False)
        return result

    def _use_pack(self, pack: Any) -> None:
        """Baselines and artifacts of a pack live under its own name (and its own folder, when it has one)."""
        pack.register()
        self.suite = pack.name
        self.baselines_root = pack.baselines

    def _tuned(self, case: str | Case, options: RunOptions | None) -> RunOptions | None:
        """With ``--giacheck-trials N`` a negative claim is tested after tuning the attack (Appendix A):
        Optuna TPE over λ_TV, λ_BN and lr, selected by the attack's own gradient distance (no ground truth).
        A budget given by the test is kept as it is."""
        trials = int(option(self.config, "trials") or 0)
        if trials < 1 or (options is not None and options.budget is not None):
            return options
        from giacheck.specs import RunOptions
        from giacheck.tuning import tune

        options, case = options or RunOptions(), self.case(case)
        tuned = tune(case, profile=self.profile, trials=trials, device=self.device, seed=options.seed,
                     data=options.data, storage=option(self.config, "storage") or None)
        self.item.user_properties.append((f"tuning[{case.id}]", json.dumps(tuned.to_dict(), allow_nan=False)))
        return dataclasses.replace(options, budget=tuned.best_attack)

    # -- internals
    def _conclude(self, result: Result, claim: claims.ClaimResult, *, positive: bool) -> None:
        baseline = self._baseline(result, positive=positive)
        self._record(result, claim, baseline)
        if not claim.passed:
            self.failures.append(claim.message)
        self._finish()

    def _baseline(self, result: Result, *, positive: bool) -> BaselineCheck:
        """The case against its recorded baseline (missing, corrupt, stale, updated, pass or fail); a check that
        does not pass adds its message to the test's failures."""
        from giacheck.baselines import BaselineStore, check_baseline

        check = check_baseline(BaselineStore(self._baselines_root(), self.profile), self.suite, result.to_dict(),
                               tolerance=float(option(self.config, "tolerance")), positive=positive,
                               update=updating(self.config),
                               accept_update=bool(self.config.getoption("giacheck_update_all")))
        if not check.passed:
            self.failures.append(check.message)
        return check

    def _baselines_root(self) -> Path:
        return self.baselines_root or Path(option(self.config, "baselines"))

    def _record(self, result: Result, claim: claims.ClaimResult, baseline: BaselineCheck) -> None:
        cached = next(c for c in self.cache.values() if c.result is result)
        record = _payload(suite=self.suite, profile=self.profile, nodeid=self.item.nodeid,
                          baselines_root=self._baselines_root(), result=result, claim=claim, baseline=baseline,
                          cached=cached)
        self.item.user_properties.append((PROPERTY, json.dumps(record.to_json(), allow_nan=False)))
        self.item.user_properties.append((f"ssim_mean[{result.case_id}]", result.ssim_mean))
        self.item.user_properties.append((f"ssim_max[{result.case_id}]", result.ssim_max))

    def _finish(self) -> None:
        __tracebackhide__ = True
        if self.failures:
            messages, self.failures = self.failures, []
            pytest.fail("\n".join(messages), pytrace=False)


def _payload(*, suite: str, profile: str, nodeid: str, baselines_root: Path, result: Result,
             claim: claims.ClaimResult, baseline: BaselineCheck, cached: _Cached) -> CaseRecord:
    """The one record of a case a test concluded: what travels to the controller (as JSON in
    ``user_properties``) and becomes a line of ``results.jsonl``; the controller adds the test's outcome."""
    from giacheck.records import CaseRecord

    return CaseRecord.from_result(result, suite=suite, profile=profile, claim=claim, baseline=baseline,
                                  wall_s=cached.wall_s, origin=cached.origin, nodeid=nodeid,
                                  baselines_root=baselines_root)


def _as_state(result: Any, wall: float) -> tuple[dict[str, Any], float]:
    return result.to_state(), wall


_CACHE = pytest.StashKey[dict]()


@pytest.fixture
def gia(request: pytest.FixtureRequest) -> GiaFixture:
    """Run gradient-inversion cases and assert claims against recorded baselines."""
    config = request.config
    set_cpu_threads(config)  # normally done at collection; here too for a fixture reached another way
    cache = config.stash.setdefault(_CACHE, {})
    suite = Path(str(request.node.path)).stem
    folder = getattr(config, "workerinput", {}).get(SHARED_KEY)
    return GiaFixture(config=config, item=request.node, cache=cache, suite=suite,
                      shared=SharedResults(Path(folder)) if folder else None)
