"""Optuna TPE search over the attack's hyper-parameters (paper Appendix A; DESIGN §4, §7).

The paper tunes, per setting, "(i) the total-variation regularization weight λ_TV ∈ [1e-6, 1e-1] (log-uniform),
(ii) normalization statistic regularization strength λ_BN ∈ {0, 1e-4, 1e-2}, (iii) attack learning rate
η ∈ [1e-4, 1e2] (log-uniform)" with Optuna's default TPE sampler (Appendix A). Two ways to pick the best trial:

- ``Selection.OBJECTIVE`` (default) minimizes the final update distance (``AttackSpec.distance``, ``1 − cos`` by
  default) of each trial's attack:
  the part of the attack objective that is comparable across λ_TV and λ_BN, and uses no ground truth, so the
  tuned attack is one a real server could run. SSIM is never read in this mode.
- ``Selection.ORACLE`` maximizes SSIM against the client's private images, as the paper did ("we actively
  search for settings that maximize reconstruction quality, measured primarily using SSIM"): an auditor's
  upper bound, labelled ``oracle`` in the result, never an attack result (DESIGN §10).

Studies live in memory, in an RDB (``sqlite:///tuning.db``) or in a journal file (``tuning.log``), so that several
machines can add trials to one study (DESIGN §7): give each machine its own ``sampler_seed``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from giacheck.errors import GiacheckError
from giacheck.jsonio import finite
from giacheck.specs import AttackSpec, Case, RunOptions, Selection, get_profile

if TYPE_CHECKING:
    import optuna

    from giacheck.runner import Result

__all__ = ["SearchSpace", "TrialRecord", "TuningResult", "run_case", "tune"]

log = logging.getLogger("giacheck.tuning")

_CONFIG_ATTR = "giacheck"  # study user attribute holding what every trial of the study must share
_METRIC = {Selection.OBJECTIVE: "grad_distance", Selection.ORACLE: "ssim_mean"}
_DIRECTION = {Selection.OBJECTIVE: "minimize", Selection.ORACLE: "maximize"}
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_JOURNAL_SUFFIXES = (".log", ".journal")
_STORAGE_FORMS = ("None (in memory), an RDB URL such as 'sqlite:///tuning.db', or a journal file path ending in "
                  "'.log' or '.journal'")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSpace:
    """Appendix A's ranges: λ_TV and lr log-uniform over ``(low, high)``, λ_BN one of ``bn_weight``."""

    tv_weight: tuple[float, float] = (1e-6, 1e-1)
    bn_weight: tuple[float, ...] = (0.0, 1e-4, 1e-2)
    lr: tuple[float, float] = (1e-4, 1e2)

    def __post_init__(self) -> None:
        problems = []
        for name in ("tv_weight", "lr"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or not 0 < bounds[0] < bounds[1] or not math.isfinite(bounds[1]):
                problems.append(f"{name}={bounds!r} (valid: (low, high) with 0 < low < high, log-uniform)")
        if not self.bn_weight or any(not (math.isfinite(w) and w >= 0) for w in self.bn_weight):
            problems.append(f"bn_weight={self.bn_weight!r} (valid: a non-empty tuple of weights >= 0)")
        if problems:
            raise GiacheckError("invalid search space: " + "; ".join(problems))

    def suggest(self, trial: optuna.Trial) -> dict[str, float]:
        """Sample one setting; the keys are :class:`AttackSpec` fields."""
        return {
            "tv_weight": trial.suggest_float("tv_weight", *self.tv_weight, log=True),
            "bn_weight": float(trial.suggest_categorical("bn_weight", list(self.bn_weight))),
            "lr": trial.suggest_float("lr", *self.lr, log=True),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRecord:
    """One trial of the study: sampled setting, the value it was ranked by and the attack's scores.

    ``ssim_mean`` is ``None`` under ``Selection.OBJECTIVE``: that search never reads the ground truth.
    """

    number: int
    state: str
    tv_weight: float | None
    bn_weight: float | None
    lr: float | None
    value: float | None
    objective: float | None
    grad_distance: float | None
    ssim_mean: float | None

    @property
    def params(self) -> dict[str, float | None]:
        return {"tv_weight": self.tv_weight, "bn_weight": self.bn_weight, "lr": self.lr}

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "state": self.state, "params": self.params, "value": finite(self.value),
                "objective": finite(self.objective), "grad_distance": finite(self.grad_distance),
                "ssim_mean": finite(self.ssim_mean)}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuningResult:
    """The best attack setting of a study, how it was selected, and every trial of the study."""

    case_id: str
    profile: str
    seed: int
    sampler_seed: int
    selection: Selection
    best_attack: AttackSpec
    best_value: float
    best_trial: int
    trials_run: int  # by this call; ``trials`` also holds those of earlier calls sharing the storage
    trials: tuple[TrialRecord, ...]
    study_name: str
    storage: str | None

    @property
    def metric(self) -> str:
        return _METRIC[self.selection]

    @property
    def direction(self) -> str:
        return _DIRECTION[self.selection]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (storage URL with any password masked)."""
        best = next(t for t in self.trials if t.number == self.best_trial)
        out: dict[str, Any] = {
            "case_id": self.case_id,
            "profile": self.profile,
            "seed": self.seed,
            "sampler": {"name": "TPESampler", "seed": self.sampler_seed},
            "selection": str(self.selection),
            "metric": self.metric,
            "direction": self.direction,
            "best": {"trial": self.best_trial, "value": self.best_value, "params": best.params,
                     "attack": dataclasses.asdict(self.best_attack)},
            "trials_run": self.trials_run,
            "trials_in_study": len(self.trials),
            "trials": [t.to_dict() for t in self.trials],
            "study_name": self.study_name,
            "storage": _redact(self.storage),
        }
        if self.selection is Selection.ORACLE:
            out["note"] = ("hyper-parameters selected by SSIM against the private images: an auditor's upper bound, "
                           "not an attack result")
        return out


def run_case(case: Case, **kwargs: Any) -> Result:
    """:func:`giacheck.runner.run_case`, imported on first use so that importing this module stays light."""
    from giacheck.runner import run_case as _run_case

    return _run_case(case, **kwargs)


def tune(
    case: Case | str,
    *,
    profile: str = "smoke",
    trials: int,
    seed: int = 0,
    device: str = "cpu",
    data: str = "bundled",
    storage: str | None = None,
    study_name: str | None = None,
    selection: Selection | str = Selection.OBJECTIVE,
    base: AttackSpec | None = None,
    space: SearchSpace | None = None,
    sampler_seed: int | None = None,
) -> TuningResult:
    """Search λ_TV, λ_BN and lr for ``case`` with Optuna's TPE sampler; run ``trials`` more trials.

    Args:
        case: a :class:`Case` or a case id.
        profile: budget name; its attack spec is the base of every trial unless ``base`` is given.
        trials: number of trials this call runs (>= 1), added to any already in the study.
        seed: the case seed passed to every :func:`run_case` (model initialization, attack noise); fixed per study.
        device, data: passed to :func:`run_case`.
        storage: ``None`` (in memory), an RDB URL (``sqlite:///tuning.db``) or a journal file path ending in
            ``.log``/``.journal``; an existing study of the same name is loaded and extended.
        study_name: defaults to one derived from the case, profile, selection and seed.
        selection: ``objective`` minimizes the final update distance (no ground truth); ``oracle`` maximizes SSIM
            (an auditor's upper bound).
        base: attack spec whose other fields (iterations, restarts, …) every trial keeps.
        space: the ranges searched (default: Appendix A's).
        sampler_seed: seeds the TPE sampler (default ``seed``); machines sharing a study should each pass their
            own. Resuming a stored study reseeds from ``(sampler_seed, trials already stored)`` so as not to
            repeat the earlier trials' settings.

    Raises:
        GiacheckError: bad ``trials``, storage, case, profile or selection, or a stored study set up for another
            case/profile/seed/selection/base/space — all before any attack runs; or no trial completed.
    """

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise GiacheckError(f"trials={trials!r}; valid: an integer >= 1 (the number of trials this call runs)")
    case = Case.parse(case) if isinstance(case, str) else case
    selection = _selection(selection)
    spec = base if base is not None else get_profile(profile).attack
    space = space if space is not None else SearchSpace()
    _check_case(case, data)
    optuna_storage = _open_storage(storage)

    name = study_name or f"giacheck:{case.id}:{profile}:{selection}:seed{seed}"
    config = {"case_id": case.id, "profile": profile, "seed": seed, "data": data, "selection": str(selection),
              "base": dataclasses.asdict(spec), "space": {k: list(v) for k, v in dataclasses.asdict(space).items()}}
    study, effective_seed = _open_study(optuna_storage, name, config, selection,
                                        seed if sampler_seed is None else sampler_seed)

    def objective(trial: optuna.Trial) -> float:
        return _run_trial(trial, case, space, spec, selection, profile=profile, device=device,
                          options=RunOptions(seed=seed, data=data))

    study.optimize(objective, n_trials=trials)

    records = tuple(_record(t) for t in study.get_trials(deepcopy=False))
    try:
        best = study.best_trial
    except ValueError:
        raise GiacheckError(f"study {name!r}: no trial completed ({len(records)} in the study; a trial fails when "
                            f"its {_METRIC[selection]} is not finite)") from None
    best_spec = dataclasses.replace(spec, **{key: float(value) for key, value in best.params.items()})
    log.info("%s: best trial %d of %d, %s=%.4g (%s selection)", case.id, best.number, len(records),
             _METRIC[selection], best.value, selection)
    return TuningResult(case_id=case.id, profile=profile, seed=seed, sampler_seed=effective_seed,
                        selection=selection, best_attack=best_spec, best_value=float(best.value),
                        best_trial=best.number, trials_run=trials, trials=records, study_name=name, storage=storage)


def _open_study(storage: Any, name: str, config: dict[str, Any], selection: Selection,
                sampler_seed: int) -> tuple[optuna.Study, int]:
    """Create or load the study ``name``, check it was set up for ``config``, reseed TPE past stored trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        storage = optuna.storages.InMemoryStorage()
    probe = optuna.create_study(storage=storage, study_name=name, direction=_DIRECTION[selection],
                                load_if_exists=True)
    _check_config(probe, config, name)
    effective_seed = _resume_seed(sampler_seed, len(probe.get_trials(deepcopy=False)))
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.TPESampler(seed=effective_seed))
    return study, effective_seed


def _run_trial(trial: optuna.Trial, case: Case, space: SearchSpace, spec: AttackSpec, selection: Selection, *,
               profile: str, device: str, options: RunOptions) -> float:
    """Run one sampled setting; its value is the attack's update distance, or SSIM under oracle selection."""
    params = space.suggest(trial)
    options = dataclasses.replace(options, budget=dataclasses.replace(spec, **params))
    result = run_case(case, profile=profile, device=device, options=options)
    grad_distance = float(result.grad_distance)
    trial.set_user_attr("grad_distance", grad_distance)
    trial.set_user_attr("objective", float(result.objective))
    if selection is Selection.ORACLE:
        value = float(result.ssim_mean)
        trial.set_user_attr("ssim_mean", value)
    else:
        value = grad_distance  # the ground truth is never read in this mode
    log.info("%s trial %d: tv_weight=%.3g bn_weight=%.3g lr=%.3g -> %s=%.4g", case.id, trial.number,
             params["tv_weight"], params["bn_weight"], params["lr"], _METRIC[selection], value)
    return value


def _selection(value: Selection | str) -> Selection:
    try:
        return Selection(value)
    except ValueError:
        raise GiacheckError(f"selection={value!r}; valid: {', '.join(Selection)}") from None


def _check_case(case: Case, data: str) -> None:
    """Reject a case that makes no sense before any trial is stored (same check as :func:`run_case`)."""
    from giacheck.data import open_source
    from giacheck.models import get_entry
    from giacheck.validation import check_case

    entry = get_entry(case.model.name)
    check_case(case, entry=entry, source=open_source(data, num_classes=entry.num_classes))


def _open_storage(storage: str | None) -> optuna.storages.BaseStorage | None:
    """``None``, an RDB storage for a URL, or a journal-file storage for a ``.log``/``.journal`` path."""
    import optuna
    import sqlalchemy.exc

    if storage is None:
        return None
    if not isinstance(storage, str):
        raise GiacheckError(f"storage={storage!r}; valid: {_STORAGE_FORMS}")
    if _URL_RE.match(storage):
        try:
            return optuna.storages.RDBStorage(storage)
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
            reason = str(exc).splitlines()[0]
            raise GiacheckError(f"cannot open storage {_redact(storage)!r}: {reason}. Check the URL, that its "
                                "database driver is installed and that the database (or sqlite file's folder) "
                                "exists") from None
    if storage.endswith(_JOURNAL_SUFFIXES):
        path = Path(storage).expanduser()
        if not path.parent.is_dir():
            raise GiacheckError(f"journal storage {storage!r}: folder {str(path.parent)!r} does not exist; "
                                "create it (on a file system every machine sharing the study can reach)")
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        except OSError as exc:
            raise GiacheckError(f"cannot open journal storage {storage!r}: {exc}") from None
    raise GiacheckError(f"storage={storage!r} is neither an RDB URL nor a journal file; valid: {_STORAGE_FORMS}")


def _check_config(study: optuna.Study, config: dict[str, Any], name: str) -> None:
    """Record what the study's trials share, or refuse to extend a study set up for something else."""
    stored = study.user_attrs.get(_CONFIG_ATTR)
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise GiacheckError(f"study {name!r} already holds trials not made by giacheck.tuning; "
                                "pass another study_name")
        study.set_user_attr(_CONFIG_ATTR, config)
        return
    differences = [f"{key}: stored {stored.get(key)!r}, given {value!r}" for key, value in config.items()
                   if stored.get(key) != value]
    if differences:
        raise GiacheckError(f"study {name!r} was set up for other settings, so its values are not comparable "
                            f"with new trials ({'; '.join(differences)}); pass another study_name")


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    return TrialRecord(
        number=trial.number,
        state=trial.state.name.lower(),
        tv_weight=trial.params.get("tv_weight"),
        bn_weight=trial.params.get("bn_weight"),
        lr=trial.params.get("lr"),
        value=trial.value if trial.values else None,
        objective=attrs.get("objective"),
        grad_distance=attrs.get("grad_distance"),
        ssim_mean=attrs.get("ssim_mean"),
    )


def _resume_seed(seed: int, stored: int) -> int:
    """``seed`` for a new study; for one resumed after ``stored`` trials, a seed derived from both."""
    return seed if stored == 0 else int(np.random.SeedSequence([seed, stored]).generate_state(1)[0])



def _redact(storage: str | None) -> str | None:
    """Mask a password in an RDB URL (``postgresql://user:***@host/db``)."""
    return None if storage is None else re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", storage)
