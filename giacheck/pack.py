"""Privacy test packs: a vendor's model, a grid of deployment settings and what must hold, in a few lines.

A pack is a plain pytest module (``giacheck init-pack`` scaffolds one)::

    PACK = Pack(
        name="acme_classifier", model="acme.models:classifier", input_size=32, num_classes=10,
        grid=Grid(batch_sizes=(1, 8), bn=("train", "eval"), stats=("none", "exact")),
        rules=(Rule("no configuration leaks an identifiable image"),
               Rule("bs >= 8 stays below SSIM 0.1 on every image", max_ssim=0.1, where="bs>=8")),
        baselines=Path(__file__).parent / "baselines",
    )

Every configuration of the grid becomes a case, run over the profile's challenge set (several private images
and seeds) and judged on its most leaking image: a rule holds when no image of any trial is re-identified
against chance (:mod:`giacheck.verdicts`) and, when the rule sets ``max_ssim``, no image's SSIM exceeds it (a
batch mean never hides one leaked image). A rule is conclusive only when the pack's positive control
re-identifies under the same budget. Each case is also checked against its recorded baseline, with the same
flags as the suites (``--giacheck-update`` …). A configuration no rule covers is recorded as a regression
(baseline only). ``giacheck audit`` runs the same grid without pytest.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from giacheck import claims
from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.specs import (
    AXES,
    AXIS,
    DEFAULT_ATTACK,
    AttackSpec,
    Axis,
    BNMode,
    Case,
    LabelKnowledge,
    ModelSpec,
    RunOptions,
    StatsAccess,
)
from giacheck.verdicts import Evidence

__all__ = ["Grid", "InvalidPackError", "Pack", "Rule", "default_control"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class InvalidPackError(InvalidCaseError):
    """A pack, grid or rule that makes no sense, rejected before any compute."""


# ------------------------------------------------------------------------------------------------ the grid
@dataclass(frozen=True, slots=True, kw_only=True)
class Grid:
    """Deployment settings to test; every combination is one configuration.

    Each field lists the values of one axis of the case grammar (:data:`giacheck.specs.AXES`, the axis whose
    ``grid`` names the field), written as in case ids without the prefix: ``updates`` takes ``fedsgd`` or
    ``fedavgK``, ``defences`` a chain such as ``clip1.5`` (``""``: no defence). An ``exact``-statistics
    configuration with an inference-mode client is *not applicable* (an eval-mode client updates no running
    statistics, so there is nothing to invert) and is left out, listed by :meth:`Pack.plan`.
    """

    batch_sizes: tuple[int, ...] = (1,)
    bn: tuple[BNMode, ...] = (BNMode.TRAIN,)
    stats: tuple[StatsAccess, ...] = (StatsAccess.NONE,)
    updates: tuple[str, ...] = ("fedsgd",)
    labels: tuple[LabelKnowledge, ...] = (LabelKnowledge.KNOWN,)
    defences: tuple[str, ...] = ("",)
    states: tuple[str, ...] = ("random",)  # the global model's state (giacheck.modelstate); Pack(weights=…): ckpt
    minibatches: tuple[int | None, ...] = (None,)  # FedAvg images per local step; None (or ""): the whole batch
    optimizers: tuple[str, ...] = ("sgd",)  # FedAvg: sgd, momentumM, nesterovM, adam
    weight_decays: tuple[float, ...] = (0.0,)
    lrs: tuple[float, ...] = (0.01,)  # the client's local learning rate
    augments: tuple[str, ...] = ("none",)  # none, flip, crop, cropflip
    hyper: tuple[str, ...] = ("known",)  # what the server knows of the local training: known, draws, unknown

    def __post_init__(self) -> None:
        problems: list[str] = []
        for axis in GRID_AXES:
            raw = getattr(self, axis.grid)
            try:
                given = _tuple(raw)
                values = tuple(_grid_value(axis, v) for v in given)
            except (TypeError, ValueError, InvalidCaseError):
                valid = _GRID_VALID.get(axis.key) or ", ".join(axis.choices)
                shown = list(_tuple(raw)) if isinstance(raw, str | tuple | list) else raw
                problems.append(f"{axis.grid}={shown!r} (valid: {valid})")
                continue
            if not values:
                problems.append(f"{axis.grid} is empty (give at least one value)")
            elif len(set(values)) != len(values):
                problems.append(f"{axis.grid}={[str(v) for v in given]} repeats a value")
            object.__setattr__(self, axis.grid, tuple(_shown(axis, v) for v in values))
        if problems:
            raise InvalidPackError("invalid grid: " + "; ".join(problems))

    def cases(self, model: ModelSpec, *, attack: str = DEFAULT_ATTACK) -> Iterator[Case]:
        """Every combination for ``model`` attacked by ``attack``, in a stable order (the order of Grid's fields)."""
        lists = [[_grid_value(axis, v) for v in getattr(self, axis.grid)] for axis in GRID_AXES]
        for combination in itertools.product(*lists):
            values = dict(zip((axis.key for axis in GRID_AXES), combination, strict=True))
            yield Case.from_axes({"model": model.name, "res": model.resolution, "attack": attack, **values})


GRID_AXES = tuple(next(a for a in AXES if a.grid == f.name) for f in dataclasses.fields(Grid))  # Grid's order
_GRID_VALID = {"bs": "positive integers", "update": "fedsgd, fedavgK with K >= 1 local steps",
               "defences": "defence chains such as clip1.5 or clip1.5+identity, '' for none",
               "state": "random, bncal, warmN (N >= 1 SGD steps), ckpt (with Pack(weights=…))",
               "mb": "positive integers up to the batch size, None or '' for the whole batch",
               "opt": "sgd, momentumM, nesterovM (0 < M < 1), adam",
               "wd": "finite numbers >= 0", "lr": "finite numbers > 0"}


def _grid_value(axis: Axis, value: Any) -> Any:
    """A grid entry as the axis' value (read as an id would spell it)."""
    if axis.numeric and axis.default is None and value in ("", None):
        return None  # an optional count (mb): absent
    if axis.numeric and axis.read is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InvalidCaseError(f"{value!r} is not a finite number >= 0")
        return float(value)
    if axis.numeric:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidCaseError(f"{value!r} is not a positive integer")
        return value
    if axis.key == "defences" and value in ("", (), None):
        return ()
    text = "+".join(value) if isinstance(value, tuple) else str(value)
    if not re.fullmatch(axis.pattern, text):
        raise InvalidCaseError(f"{text!r} is not of the form {axis.valid}")
    return axis.read(text)


def _shown(axis: Axis, value: Any) -> Any:
    """How a grid keeps a value: numbers and enums as they are, other axes as their id text."""
    return value if axis.numeric or axis.choices else axis.write(value)


def _tuple(values: Any) -> tuple[Any, ...]:
    """A comma-separated string, a single value or an iterable, as a tuple."""
    if isinstance(values, str):
        return tuple(v.strip() for v in values.split(",")) if values else ("",)
    if isinstance(values, int):
        return (values,)
    return tuple(values)


# ------------------------------------------------------------------------------------------------ rules
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, "=": operator.eq, ">": operator.gt, "<": operator.lt,
}
_CONDITION_RE = re.compile(r"^\s*(?P<key>[a-z_]+)\s*(?P<op>>=|<=|!=|=|>|<)\s*(?P<value>[A-Za-z0-9_.:+]*)\s*$")
# Rule keys: every axis of the grammar (compared as spelled in ids), plus ``steps``, FedAvg's local steps.
_KEYS: dict[str, Callable[[Case], Any]] = {
    **{axis.key: (lambda a: lambda c: a.get(c) if a.numeric else a.write(a.get(c)) if a.get(c) is not None
                  else "")(axis) for axis in AXES},
    "steps": lambda c: c.client.local_steps,
    "mb": lambda c: c.client.minibatch or c.client.batch_size,  # images per local step
}
_NUMERIC = {axis.key for axis in AXES if axis.numeric} | {"steps"}


@dataclass(frozen=True, slots=True)
class Rule:
    """What must hold: no configuration matching ``where`` leaks an identifiable image (no image of any trial is
    re-identified at the verdict's α), and, when ``max_ssim`` is set, every image's SSIM stays at or below it.

    ``where`` is empty (every configuration) or conditions joined by ``,`` (and): ``bs>=8``,
    ``bn=train,stats=exact``, ``update!=fedsgd``, ``defences=clip1``. Keys: every axis of the case grammar
    (``giacheck.specs.AXES``: model, res, bn, bs, stats, update, init, labels, defences, attack) and ``steps``.
    """

    text: str
    _: KW_ONLY
    max_ssim: float | None = None  # an extra cutoff on the most leaking image's SSIM (never on a batch mean)
    where: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.where, str):
            raise InvalidPackError(f"rule {self.text!r}: where={self.where!r} (valid: '' for every configuration, "
                                   "or conditions such as 'bs>=8,bn=train')")
        value = self.max_ssim
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not -1.0 <= value <= 1.0):
            raise InvalidPackError(f"rule {self.text!r}: max_ssim={value!r} (valid: None, or a number in [-1, 1])")
        self.conditions()  # validate now, not in the middle of a run

    def conditions(self) -> list[tuple[str, Callable[[Any, Any], bool], Any]]:
        out = []
        for part in filter(str.strip, self.where.split(",")):
            m = _CONDITION_RE.match(part)
            if m is None or m["key"] not in _KEYS:
                raise InvalidPackError(
                    f"rule {self.text!r}: cannot read condition {part.strip()!r} in where={self.where!r}; "
                    f"write KEY OP VALUE with KEY one of {', '.join(_KEYS)} and OP one of {', '.join(_OPS)}, "
                    "e.g. 'bs>=8' or 'bn=train,stats=exact'")
            value: Any = m["value"]
            if m["key"] in _NUMERIC:
                if not re.fullmatch(r"\d+(?:\.\d+)?", value):
                    raise InvalidPackError(f"rule {self.text!r}: {m['key']} compares with a number, "
                                           f"got {value!r}")
                value = float(value) if "." in value else int(value)
            elif m["op"] not in ("=", "!="):
                raise InvalidPackError(f"rule {self.text!r}: {m['key']} takes = or !=, not {m['op']!r}")
            else:
                value = self._spelled(m["key"], value)
            out.append((m["key"], _OPS[m["op"]], value))
        return out

    def _spelled(self, key: str, value: str) -> str:
        """A value as case ids spell it (``fedavg`` is ``fedavg1``, ``clip1.50`` is ``clip1.5``); a value the
        axis cannot take is refused, so that a typo cannot make a rule silently cover nothing."""
        axis = AXIS[key]
        if key == "defences" and value == "":
            return ""
        try:
            if not re.fullmatch(axis.pattern, value):
                raise ValueError(value)
            return axis.write(axis.read(value))
        except (ValueError, InvalidCaseError):
            valid = ", ".join(axis.choices) or axis.valid
            raise InvalidPackError(f"rule {self.text!r}: {key}={value!r} is not a value of {key} "
                                   f"(valid: {valid})") from None

    def applies(self, case: Case) -> bool:
        return all(op(_KEYS[key](case), value) for key, op, value in self.conditions())


# ------------------------------------------------------------------------------------------------ the pack
def default_control(input_size: int) -> str:
    """The cheapest positive control at (about) the pack's resolution: DLG's sigmoid LeNet, inference mode, bs1
    (a few seconds on a CPU)."""
    size = input_size if input_size % 4 == 0 and 8 <= input_size <= 64 else 32
    return f"lenet_sigmoid-{size}-bn_eval-bs1-stats_none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The configurations a pack runs, and those left out as not applicable (with why)."""

    cases: tuple[Case, ...]
    not_applicable: tuple[tuple[str, str], ...]  # (case id, reason)
    model_sha256: str = ""  # of the pack's model as built at its seed (and weights): its architecture and values


@dataclass(frozen=True, slots=True, kw_only=True)
class Pack:
    """A vendor's privacy test pack (see the module docstring).

    Args:
        name: the pack's name: its baselines folder, its suite in reports, and the model's name in case ids.
        model: a registered model name, ``package.module:function``, or a factory returning a ``ModelEntry``.
        input_size / num_classes / mean / std: override the entry's (``None``: keep them).
        grid: deployment settings; rules: what must hold.
        control: the positive control's case id (default: :func:`default_control` at the input size); every
            rule is conclusive only when this re-identifies an image under the same budget and challenge set.
        baselines: the baselines root (``<root>/<profile>/<name>/<case-id>.json``); ``None``: the run's
            ``--giacheck-baselines``. ``Path(__file__).parent / "baselines"`` keeps them beside the pack, also
            when the pack is an installed package shipping them as package data.
        data: image source (``bundled``, ``imagefolder:PATH``, ``cifar10:PATH``); seed: model init and attack seed.
        weights: the checkpoint the vendor deploys (a local safetensors file or ``torch.save`` state dict): every
            configuration then runs at state ``ckpt`` from it (the control keeps its own state). Its sha256 is
            part of every baseline's identity, so a changed file makes the recorded baselines stale.
        attack: overrides the profile's budget (for the control too, so the budget stays the same).
        attacker: the attack run on every configuration and on the control (a registered attack name or
            ``package.module:Name``; default the built-in); its name is part of every case id but the built-in's.
        client: a real framework client (:class:`giacheck.fl.FlowerClient`, :class:`giacheck.fl.FednClient`) whose
            round every configuration captures in place of giacheck's simulated client; the configurations must
            then be FedAvg without simulated defences (the client applies its own). The control stays simulated.
    """

    name: str
    model: str | Callable[[], Any]
    grid: Grid = field(default_factory=Grid)
    rules: tuple[Rule, ...] = ()
    input_size: int | None = None
    num_classes: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    control: str | None = None
    baselines: Path | str | None = None
    data: str = "bundled"
    seed: int = 0
    attack: AttackSpec | None = None
    attacker: str = DEFAULT_ATTACK
    weights: Path | str | None = None
    client: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise InvalidPackError(f"pack name {self.name!r}: start with a letter, then letters, digits or '_' "
                                   "(it names the baselines folder and appears in case ids)")
        if not (isinstance(self.model, str) and self.model) and not callable(self.model):
            raise InvalidPackError(f"pack {self.name}: model={self.model!r}; give a registered name, "
                                   "'package.module:function' or a factory returning a giacheck.models.ModelEntry")
        if not isinstance(self.grid, Grid):
            raise InvalidPackError(f"pack {self.name}: grid must be a giacheck.pack.Grid, "
                                   f"got {type(self.grid).__name__}")
        object.__setattr__(self, "rules", tuple(self.rules))
        if not all(isinstance(r, Rule) for r in self.rules):
            raise InvalidPackError(f"pack {self.name}: rules must be giacheck.pack.Rule objects")
        for label, value in (("input_size", self.input_size), ("num_classes", self.num_classes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidPackError(f"pack {self.name}: {label}={value!r} (valid: a positive integer)")
        for label, value in (("mean", self.mean), ("std", self.std)):
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3 or (label == "std" and min(value) <= 0):
                    raise InvalidPackError(f"pack {self.name}: {label}={value!r} (valid: three numbers"
                                           f"{', all > 0' if label == 'std' else ''})")
                object.__setattr__(self, label, value)
        if self.baselines is not None:
            object.__setattr__(self, "baselines", Path(self.baselines))
        if self.weights is not None:
            object.__setattr__(self, "weights", Path(self.weights))
            if self.grid.states == ("random",):  # the default: the checkpoint is the model's state
                object.__setattr__(self, "grid", dataclasses.replace(self.grid, states=("ckpt",)))
        others = [s for s in self.grid.states if s != "ckpt"]
        if self.weights is not None and others:
            raise InvalidPackError(f"pack {self.name}: weights={str(self.weights)!r} with grid states {others}; a "
                                   "weights file is the model's state: use states=('ckpt',) (the default)")
        if self.weights is None and "ckpt" in self.grid.states:
            raise InvalidPackError(f"pack {self.name}: grid state ckpt needs Pack(weights=PATH), the checkpoint "
                                   "file to audit")
        if self.client is not None:
            if not callable(getattr(self.client, "run_round", None)):
                raise InvalidPackError(f"pack {self.name}: client={self.client!r} (valid: a framework client such "
                                       f"as giacheck.fl.FlowerClient('pkg.mod:app'), or None)")
            fedsgd = [u for u in self.grid.updates if not u.startswith("fedavg")]
            defended = [d for d in self.grid.defences if d]
            if fedsgd or defended:
                raise InvalidPackError(f"pack {self.name}: a framework client sends weights after its own training "
                                       f"and applies its own defences; grid updates {fedsgd or ''} "
                                       f"defences {defended or ''}: use updates=('fedavgK',) and no defences")

    # -- the model and its cases
    def register(self) -> str:
        """Register the model under the pack's name with the pack's overrides; returns that name."""
        from giacheck.models import register_alias

        overrides = {k: v for k, v in (("default_size", self.input_size), ("num_classes", self.num_classes),
                                       ("mean", self.mean), ("std", self.std)) if v is not None}
        return register_alias(self.name, self.model, **overrides)

    def entry(self):
        from giacheck.models import get_entry

        return get_entry(self.register())

    @property
    def resolution(self) -> int:
        return self.input_size or self.entry().default_size

    def plan(self, *, device: Any = None, restarts: int = 1) -> Plan:
        """Expand and validate the grid before any compute; ``device`` and ``restarts`` (stacked restarts of
        the attack) are what the memory check judges each configuration against.

        Raises:
            InvalidPackError: the model does not import or its factory fails, or any configuration is invalid
                for this model (every bad configuration is listed with why and what is valid).
        """
        from giacheck.attack.registry import ATTACKS
        from giacheck.data import open_source
        from giacheck.models import get_entry
        from giacheck.validation import validate

        entry = self.entry()
        try:
            ATTACKS.get(self.attacker)
        except GiacheckError as exc:
            raise InvalidPackError(f"pack {self.name}: attacker={self.attacker!r}: {exc}") from None
        source = open_source(self.data, num_classes=entry.num_classes)
        source.verify()  # an image that does not decode is named now, not when its batch loads mid-audit
        model = ModelSpec(name=self.name, resolution=self.input_size or entry.default_size)
        cases, skipped, problems = [], [], []
        for case in self.grid.cases(model, attack=self.attacker):
            if case.threat.stats is StatsAccess.EXACT and case.client.bn_mode is BNMode.EVAL:
                skipped.append((case.id, "an inference-mode client updates no running statistics: nothing to "
                                         "invert for stats_exact"))
                continue
            found = validate(case, entry=entry, source=source, device=device, restarts=restarts)
            if found:
                problems.append(f"{case.id}: " + "; ".join(found))
            cases.append(case)
        try:
            control = Case.parse(self.control_id)
            control_entry = get_entry(control.model.name)
            found = validate(control, entry=control_entry, device=device, restarts=restarts,
                             source=open_source(self.data, num_classes=control_entry.num_classes))
        except InvalidCaseError as exc:
            found = [str(exc)]
        if found:
            problems.append(f"control {self.control_id}: " + "; ".join(found))
        if self.control_id in {case.id for case in cases}:
            problems.append(f"control {self.control_id} is also a configuration of the grid; the control must be "
                            "a separate case that reconstructs (choose another control, or drop it from the grid)")
        model_sha256 = ""
        if not any("memory:" in problem for problem in problems):  # the blank forward would not fit either
            model_problems, model_sha256 = self._model_problems()
            problems.extend(model_problems)
        if problems:
            raise InvalidPackError(f"pack {self.name}: {len(problems)} invalid configuration(s) or control:\n  "
                                   + "\n  ".join(problems))
        if not cases:
            raise InvalidPackError(f"pack {self.name}: the grid leaves no applicable configuration "
                                   f"({len(skipped)} not applicable)")
        return Plan(cases=tuple(cases), not_applicable=tuple(skipped), model_sha256=model_sha256)

    def _model_problems(self) -> tuple[list[str], str]:
        """Build the pack's model (from its weights file, if any) and run one forward pass of a blank image, so a
        builder that fails, weights that do not fit or a forward that raises is named before any compute.

        Returns:
            The problems found, and the sha256 of the built model (its architecture and every tensor).
        """
        import hashlib

        import torch

        from giacheck.models import build
        from giacheck.plugins import user_code_failure

        try:
            model = build(self.register(), self.resolution, seed=self.seed, weights=self.weights)
        except GiacheckError as exc:
            return [f"{'weights' if self.weights is not None else 'model'}: {exc}"], ""
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the builder is the vendor's code: its failure is bad input
            return [f"model {self.model!r}: building it at input size {self.resolution} {user_code_failure(exc)}"], ""
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, self.resolution, self.resolution))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return [f"model {self.model!r}: its forward pass on one blank {self.resolution}x{self.resolution} image "
                    f"{user_code_failure(exc)}"], ""
        digest = hashlib.sha256(repr(model).encode("utf-8"))
        for name, tensor in model.state_dict().items():
            digest.update(name.encode("utf-8"))
            digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return [], digest.hexdigest()

    def case_ids(self) -> list[str]:
        """The ids of the configurations to run (for ``pytest.mark.parametrize``)."""
        return [case.id for case in self.plan().cases]

    @property
    def control_id(self) -> str:
        """The positive control's id, attacked by the pack's attacker (the same attack as every configuration)."""
        control = Case.parse(self.control or default_control(self.resolution))
        return control.with_(attack=self.attacker).id

    def run_options(self) -> RunOptions:
        """How the control runs (:func:`giacheck.runner.run_case`): seed, data and budget, the same for every
        configuration (:meth:`case_options`)."""
        return RunOptions(seed=self.seed, data=self.data, budget=self.attack)

    def case_options(self) -> RunOptions:
        """How every configuration runs: :meth:`run_options` with the pack's weights file."""
        options = dataclasses.replace(self.run_options(), client=self.client)
        return dataclasses.replace(options, weights=str(self.weights)) if self.weights is not None else options

    # -- verdicts
    def rules_for(self, case_id: str) -> list[Rule]:
        case = Case.parse(case_id)
        return [rule for rule in self.rules if rule.applies(case)]

    def judge(self, evidence: Evidence, control: claims.ClaimResult | None, *,
              control_set: tuple[str, ...] | None = None) -> claims.ClaimResult:
        """The verdict of one configuration on its most leaking image: every rule that applies (an infeasibility
        claim with the control), the first that fails deciding; a regression when no rule covers it."""
        rules = self.rules_for(evidence.case_id)
        if not rules:
            return claims.regression(evidence)
        if control is None:
            raise ValueError(f"{evidence.case_id}: rules apply, so the positive control's claim is needed")
        claim = claims.infeasible(evidence, control=control,
                                  control_sets=(control_set,) if control_set is not None else ())
        worst_ssim = max(image.ssim for image in evidence.images)
        for rule in rules:
            # above the vendor's own cutoff is a leak whatever the control or the pool: no negative is claimed
            if claim.verdict is not claims.Verdict.FAIL and rule.max_ssim is not None and worst_ssim > rule.max_ssim:
                worst = max(evidence.images, key=lambda i: i.ssim)
                return dataclasses.replace(claim, verdict=claims.Verdict.FAIL, message=(
                    f"rule {rule.text!r}: {evidence.case_id}: FAILS — image {worst.image}#{worst.position} (seed "
                    f"{worst.seed}) reaches SSIM {worst_ssim:.3f} > {rule.max_ssim:g}; {evidence.describe()}"))
        texts = "; ".join(repr(rule.text) for rule in rules)
        return dataclasses.replace(claim, message=f"rule(s) {texts}: {claim.message}")
