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
from giacheck.plugin.options import option, set_cpu_threads, updating, weights_by_model
from giacheck.plugin.xdist import SHARED_KEY
from giacheck.sharedcache import SharedResults

if TYPE_CHECKING:
    from giacheck.challenge import CaseTrials
    from giacheck.records import BaselineCheck, CaseRecord
    from giacheck.runner import Result
    from giacheck.specs import Case, ChallengeSet, RunOptions
    from giacheck.verdicts import Limitation

__all__ = ["GiaFixture", "gia"]


@dataclass(slots=True)
class _Cached:
    """A case's result in this worker: how long it took, who computed it, the suites it has artifacts in."""

    result: Any
    wall_s: float
    origin: str  # "computed" (here) or "another worker"


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

    def require_full_ladder(self, why: str) -> None:
        """Skip a ladder point no claim needs unless the run asks for every strength (``--giacheck-ladder=full``)."""
        if option(self.config, "ladder") != "full":
            pytest.skip(f"needs --giacheck-ladder=full: {why}")

    def case(self, case: str | Case) -> Case:
        """``case`` parsed, with the session's ``--giacheck-attack`` when it names no attack itself, and its model
        state: ``ckpt`` for a model given ``--giacheck-weights``, else ``--giacheck-state`` where it applies
        (bncal: models with BatchNorm; warmN: classification models) whatever state the id names (a suite
        re-judged under another state)."""
        from giacheck.specs import DEFAULT_ATTACK, Case

        parsed = Case.parse(case) if isinstance(case, str) else case
        attack = option(self.config, "attack")
        if attack and parsed.attack == DEFAULT_ATTACK:
            parsed = dataclasses.replace(parsed, attack=attack)
        if parsed.model.name in weights_by_model(self.config):
            return dataclasses.replace(parsed, state="ckpt")
        state = option(self.config, "state")
        if state and parsed.state != "ckpt" and _state_applies(state, parsed.model.name):
            parsed = dataclasses.replace(parsed, state=state)
        return parsed

    @property
    def challenge(self) -> ChallengeSet:
        """The private images and seeds every verdict of this profile is the worst case over."""
        from giacheck.specs import get_profile

        return get_profile(self.profile).challenge

    def run(self, case: str | Case, *, options: RunOptions | None = None) -> Result:
        """Run one trial of a case (``options.image`` and ``options.seed`` name it) under the session's profile and
        device, or reuse it: computed once per worker, and under xdist once per run (:mod:`giacheck.sharedcache`)."""
        from giacheck.specs import RunOptions

        return self._run_all(self.case(case), [options or RunOptions()])[0]

    def _run_all(self, case: Case, per_trial: list[RunOptions]) -> list[Result]:
        """Trials of ``case``: those not cached yet are computed together (their attacks stacked where they run
        on one global model, ``runner.run_trials``) and cached one by one."""
        self._skip_without_gpu()
        per_trial = [self._with_weights(case, o) for o in per_trial]
        keys = [json.dumps([case.id, self.profile, self.device, dataclasses.asdict(o)], sort_keys=True, default=str)
                for o in per_trial]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            computed = self._compute([keys[i] for i in missing], case, [per_trial[i] for i in missing])
            self.cache.update(zip((keys[i] for i in missing), computed, strict=True))
        return [self.cache[k].result for k in keys]

    def _with_weights(self, case: Case, options: RunOptions) -> RunOptions:
        if case.state == "ckpt" and options.weights is None:
            return dataclasses.replace(options, weights=weights_by_model(self.config).get(case.model.name))
        return options

    def _compute(self, keys: list[str], case: Case, per_trial: list[RunOptions]) -> list[_Cached]:
        from giacheck.runner import Result, run_trials

        def compute() -> tuple[list[Result], float]:
            start = time.perf_counter()
            results = run_trials(case, profile=self.profile, device=self.device, options=per_trial)
            return results, (time.perf_counter() - start) / len(results)  # each trial's share

        def compute_one(o: RunOptions) -> tuple[Result, float]:  # a trial no longer stored: run alone
            start = time.perf_counter()
            return run_trials(case, profile=self.profile, device=self.device, options=[o])[0], \
                time.perf_counter() - start

        if self.shared is None:
            results, wall = compute()
            return [_Cached(r, wall, "computed") for r in results]
        # Each trial is stored under its own key, as plain values and tensors (workers load it with
        # weights_only=True). The first key's lock guards the group: a worker that needs the same trials waits
        # for it, then finds the others stored beside it.
        stored_here: set[str] = set()

        def compute_first() -> tuple[dict[str, Any], float]:
            results, wall = compute()
            for k, r in zip(keys[1:], results[1:], strict=True):
                self.shared.put(k, r.to_state(), wall)
                stored_here.add(k)
            return results[0].to_state(), wall

        out = []
        for i, (key, o) in enumerate(zip(keys, per_trial, strict=True)):
            state, wall, reused = self.shared.get_or_compute(
                key, compute_first if i == 0 else (lambda o=o: _as_state(*compute_one(o))))
            origin = "computed" if key in stored_here or not reused else "another worker"
            out.append(_Cached(Result.from_state(state), wall, origin))
        return out

    def trials(self, case: str | Case, *, options: RunOptions | None = None) -> CaseTrials:
        """Run ``case`` over the profile's challenge set (every private image under every seed) and combine the
        trials into one verdict's evidence; the case's PNG (every trial) goes into this suite's artifacts."""
        from giacheck.challenge import CaseTrials, trial_options
        from giacheck.models import get_entry
        from giacheck.specs import RunOptions

        case, options = self.case(case), options or RunOptions()
        entry = get_entry(case.model.name)
        per_trial = trial_options(options, self.challenge, num_classes=entry.num_classes, task=entry.task)
        trials = CaseTrials.of(self._run_all(case, per_trial), selection=self.challenge.selection)
        folder = Path(option(self.config, "artifacts")) / self.profile / self.suite
        saved = self.config.stash.setdefault(_SAVED, set())
        if (folder, case.id, repr(options)) not in saved:  # a case in two suites gets its PNG in each
            trials.save(folder)
            saved.add((folder, case.id, repr(options)))
        return trials

    def feasible(self, case: str | Case, *, options: RunOptions | None = None) -> CaseTrials:
        """A positive control: some image of the challenge set is re-identified (after tuning, with
        ``--giacheck-trials``, as for negatives)."""
        self._check_recorded(case)
        trials = self.trials(case, options=self._tuned(case, options))
        self._conclude(trials, claims.feasible(trials.evidence), positive=True)
        return trials

    def infeasible(self, case: str | Case, *, control: str | Case, needs: Limitation | str,
                   enabler: str | Case | None = None, options: RunOptions | None = None) -> CaseTrials:
        """No image re-identified; *inconclusive* unless ``control`` and ``enabler`` (the same architecture with
        the enabler the claim is about, where the suite has one) re-identify under the same budget and pool.
        ``needs``: the kind of negative the claim needs, stated by every claim: ``attack-limited`` (the attack fails
        at this budget; either kind passes) or ``information-limited`` (it reached the truth's objective: the
        update does not determine the image)."""
        from giacheck.verdicts import Limitation

        self._check_recorded(case)
        controls = [self.trials(c, options=self._tuned(c, options)) for c in (control, enabler) if c is not None]
        control_claim, *rest = [claims.feasible(t.evidence) for t in controls]
        trials = self.trials(case, options=self._tuned(case, options))
        claim = claims.infeasible(trials.evidence, control=control_claim, enabler=rest[0] if rest else None,
                                  needs=Limitation(needs),
                                  control_sets=tuple(t.evidence.trial_set for t in controls))
        self._conclude(trials, claim, positive=False)
        return trials

    def ordering(self, high: str | Case, low: str | Case, *, margin: float,
                 options: RunOptions | None = None) -> claims.ClaimResult:
        """``high`` leaks more than ``low`` on the same private images by a median ``margin``; inconclusive when
        ``high`` is not re-identified."""
        self._check_recorded(high, low)
        a, b = self.trials(high, options=options), self.trials(low, options=options)
        claim = claims.ordering(a.evidence, b.evidence, margin=margin)
        for trials in (a, b):
            self._record(trials, claim, self._baseline(trials, positive=False))
        if not claim.passed:
            self.failures.append(claim.message)
        self._finish()
        return claim

    def regression(self, case: str | Case, *, options: RunOptions | None = None) -> CaseTrials:
        """No feasibility verdict at this budget (labelled so): only the baseline is checked."""
        self._check_recorded(case)
        trials = self.trials(case, options=options)
        self._conclude(trials, claims.regression(trials.evidence), positive=False)
        return trials

    def pack_control(self, pack: Any) -> CaseTrials:
        """A pack's positive control: it must re-identify (and not get weaker than recorded), or the pack's
        infeasibility rules prove nothing."""
        self._use_pack(pack)
        self._check_recorded(pack.control_id)
        trials = self.trials(pack.control_id, options=pack.run_options())
        self._conclude(trials, claims.feasible(trials.evidence), positive=True)
        return trials

    def pack_case(self, pack: Any, case_id: str) -> CaseTrials:
        """One configuration of a pack, judged on its most leaking image: the rules that apply (conclusive only
        with the control re-identifying under the same budget), or a regression; and its recorded baseline."""
        self._use_pack(pack)
        self._check_recorded(case_id)
        control = control_set = None
        if pack.rules_for(case_id):
            control_trials = self.trials(pack.control_id, options=pack.run_options())
            control, control_set = claims.feasible(control_trials.evidence), control_trials.evidence.trial_set
        trials = self.trials(case_id, options=pack.case_options())
        self._conclude(trials, pack.judge(trials.evidence, control, control_set=control_set), positive=False)
        return trials

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
    def _skip_without_gpu(self) -> None:
        if self.profile == "paper" and self.device == "cpu":
            pytest.skip("the paper profile needs a GPU: pass --giacheck-device cuda (profile 'smoke' runs on CPU)")

    def _check_recorded(self, *cases: str | Case) -> None:
        """Before any compute: the recorded baseline of each case the claim concludes parses and validates (a
        corrupt one fails the test now and is never overwritten, whatever the flags), and under an update flag the
        baseline can be written (:meth:`giacheck.baselines.BaselineStore.check_writable`)."""
        __tracebackhide__ = True
        from giacheck.baselines import BaselineStore
        from giacheck.errors import BaselineError

        self._skip_without_gpu()
        store, update = BaselineStore(self._baselines_root(), self.profile), updating(self.config)
        problems: list[str] = []
        for case in cases:
            case_id = self.case(case).id
            try:
                store.check_writable(self.suite, case_id) if update else store.load(self.suite, case_id)
            except BaselineError as exc:
                problems.append(f"{case_id}: {exc}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    def _conclude(self, trials: CaseTrials, claim: claims.ClaimResult, *, positive: bool) -> None:
        baseline = self._baseline(trials, positive=positive)
        self._record(trials, claim, baseline)
        if not claim.passed:
            self.failures.append(claim.message)
        self._finish()

    def _baseline(self, trials: CaseTrials, *, positive: bool) -> BaselineCheck:
        """The case against its recorded baseline (missing, corrupt, stale, updated, pass or fail); a check that
        does not pass adds its message to the test's failures."""
        from giacheck.baselines import BaselineStore, check_baseline

        check = check_baseline(BaselineStore(self._baselines_root(), self.profile), self.suite, trials.to_dict(),
                               tolerance=float(option(self.config, "tolerance")), positive=positive,
                               update=updating(self.config),
                               accept_update=bool(self.config.getoption("giacheck_update_all")))
        if not check.passed:
            self.failures.append(check.message)
        return check

    def _baselines_root(self) -> Path:
        return self.baselines_root or Path(option(self.config, "baselines"))

    def _record(self, trials: CaseTrials, claim: claims.ClaimResult, baseline: BaselineCheck) -> None:
        cached = [c for c in self.cache.values() if any(c.result is r for r in trials.results)]
        record = _payload(suite=self.suite, profile=self.profile, nodeid=self.item.nodeid,
                          baselines_root=self._baselines_root(), trials=trials, claim=claim, baseline=baseline,
                          cached=cached)
        self.item.user_properties.append((PROPERTY, json.dumps(record.to_json(), allow_nan=False)))
        worst = trials.evidence.worst
        self.item.user_properties.append((f"worst_ssim[{trials.case_id}]", worst.ssim))
        self.item.user_properties.append((f"worst_p[{trials.case_id}]", worst.p_value))

    def _finish(self) -> None:
        __tracebackhide__ = True
        if self.failures:
            messages, self.failures = self.failures, []
            pytest.fail("\n".join(messages), pytrace=False)


def _state_applies(state: str, model: str) -> bool:
    """Whether a session-wide ``--giacheck-state`` changes ``model``: ``bncal`` only where there is BatchNorm,
    ``warmN`` only for classification (the detection loss needs boxes the auxiliary images lack)."""
    from giacheck.models import get_entry

    if state == "bncal":
        return get_entry(model).has_batchnorm
    if state.startswith("warm"):
        return get_entry(model).task == "classification"
    return True


def _payload(*, suite: str, profile: str, nodeid: str, baselines_root: Path, trials: CaseTrials,
             claim: claims.ClaimResult, baseline: BaselineCheck, cached: list[_Cached]) -> CaseRecord:
    """The one record of a case a test concluded: what travels to the controller (as JSON in
    ``user_properties``) and becomes a line of ``results.jsonl``; the controller adds the test's outcome."""
    from giacheck.records import CaseRecord

    origin = "computed" if any(c.origin == "computed" for c in cached) else "another worker"
    return CaseRecord.from_result(trials.to_dict(), suite=suite, profile=profile, claim=claim, baseline=baseline,
                                  wall_s=sum(c.wall_s for c in cached), origin=origin, nodeid=nodeid,
                                  baselines_root=baselines_root)


def _as_state(result: Any, wall: float) -> tuple[dict[str, Any], float]:
    return result.to_state(), wall


_CACHE = pytest.StashKey[dict]()
_SAVED = pytest.StashKey[set]()


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
