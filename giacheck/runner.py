"""Run one case end to end: validate, build, simulate the client, attack, score (DESIGN §2).

``run_case`` is the one entry point the CLI, the pytest plugin and the tests use. The attack sees the model,
the update, the labels it knows and (for ``proxy``) auxiliary images disjoint from the client's; only this
module holds the ground truth, to score the result.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from giacheck import metrics
from giacheck.attack import (
    Attack,
    NormTarget,
    Reconstruction,
    Trial,
    infer_batch_stats,
    infer_labels,
    make_attack,
    naive_stats,
    select_proxy_stats,
)
from giacheck.attack.bnstats import elements_per_channel
from giacheck.attack.invert import MAX_STACKED
from giacheck.attack.objective import Replica
from giacheck.client import ClientUpdate, bn_modules, loss_of, simulate_update
from giacheck.data import POOL_LIMIT, ImageBatch, ImageSource, disjoint_pool, heldout_pool, open_source
from giacheck.defences import DPSGD, DefenceStage, aggregation_size, make_defences, privacy
from giacheck.diagnostics import truth_objective
from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.ladder import controlled_init, denoised_ssim, ladder_init
from giacheck.models import ModelEntry, build, get_entry
from giacheck.models.weights import check_weights_file
from giacheck.modelstate import StateRecord, auxiliary_images, prepare_state
from giacheck.provenance import manifest
from giacheck.reid import reidentify, reidentify_batch
from giacheck.result import AttackInfo, Oracle, ProxyChoiceRecord, Reid, Result, Threat, Timings, Truth
from giacheck.specs import (
    CALIBRATION_IMAGES,
    AttackSpec,
    BNMode,
    Case,
    ClientSpec,
    HyperKnowledge,
    LabelKnowledge,
    RunOptions,
    Selection,
    StatsAccess,
    UpdateKind,
    get_profile,
)
from giacheck.tasks import Task, get_task
from giacheck.validation import check_case

# controlled_init: from giacheck.ladder
__all__ = ["Result", "controlled_init", "image_signal", "resolve_device", "run_case", "run_trials"]




@dataclass(frozen=True, slots=True, kw_only=True)
class _Setup:
    """Everything a case needs before the client trains, checked before any compute."""

    case: Case
    profile: str
    options: RunOptions
    spec: AttackSpec
    entry: ModelEntry
    task: Task
    source: ImageSource
    attack: Attack
    device: torch.device
    batch: ImageBatch
    model: torch.nn.Module
    labels: Any  # the client's training targets (under secure aggregation, every aggregated client's in turn)
    state: StateRecord  # the global model's state (giacheck.modelstate)
    clients: int = 1  # secure aggregation: ``batch`` holds the target's images, then the other clients'
    model_change: str | None = None  # DP-SGD: how Opacus changed the model


@dataclass(frozen=True, slots=True, kw_only=True)
class _Knowledge:
    """What the attacker works with besides the update: labels, a statistics target, starting images."""

    labels: Any
    stats: NormTarget | None
    init: torch.Tensor | None
    threat: Threat
    auxiliary: tuple[str, ...] = ()  # images of the source the attacker used (proxy pool): kept out of the reid pool


def run_case(
    case: Case | str,
    *,
    profile: str = "smoke",
    device: str = "cpu",
    options: RunOptions | None = None,
    weights: str | None = None,
) -> Result:
    """Simulate the client update of ``case`` and attack it.

    Args:
        case: a :class:`Case` or a case id.
        profile: budget name (``smoke``, ``paper``); ``options.budget`` overrides its attack spec.
        device: torch device for model, client and attack.
        options: seeds, image source, budget and weights file (:class:`RunOptions`).
        weights: a local weights file for the global model (overrides ``options.weights``); a case at the
            default state ``random`` then runs as ``state_ckpt``.

    Raises:
        GiacheckError: an invalid case, model, dataset, attack or update, before the attack runs.
    """
    return run_trials(case, profile=profile, device=device, options=[options or RunOptions()], weights=weights)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Pending:
    """One trial up to its attack: the setup, the client's update, what the attacker knows, durations so far."""

    setup: _Setup
    update: ClientUpdate  # as the server sees it (giacheck.client.ClientUpdate.seen_by_server)
    knowledge: _Knowledge
    durations: tuple[float, float, float]  # build, client, prepare (seconds)
    utility: dict[str, Any] | None = None


def run_trials(
    case: Case | str,
    *,
    options: Sequence[RunOptions],
    profile: str = "smoke",
    device: str = "cpu",
    weights: str | None = None,
) -> list[Result]:
    """Run one case's trials (one :class:`RunOptions` each: a private image under a seed), in order.

    Every trial's client and attacker knowledge come first; then the attacks of trials on the same global model
    run together through the attack's ``trials`` method where it has one (the built-in attack stacks them:
    ``giacheck.attack.invert_trials``), else one after another; then each trial is scored. Arguments as
    :func:`run_case`'s, ``options`` one per trial.
    """
    pending = [_pending(case, profile, device, replace(o, weights=str(weights)) if weights is not None else o,
                        trials=len(options)) for o in options]
    results: list[Result | None] = [None] * len(pending)
    for group in _attack_groups(pending):
        start = time.perf_counter()
        recs = _attack_group([pending[i] for i in group])
        share = (time.perf_counter() - start) / len(group)
        for i, rec in zip(group, recs, strict=True):
            p = pending[i]
            _check_reconstruction(rec, p.setup.case, p.setup.spec, tuple(p.setup.batch.images.shape))
            results[i] = replace(_score(p.setup, rec, p.knowledge, p.update, (*p.durations, share)),
                                 utility=p.utility)
    return results


def _pending(case: Case | str, profile: str, device: str, options: RunOptions, *, trials: int) -> _Pending:
    marks = [time.perf_counter()]
    setup = _prepare(_with_weights_state(case, options), profile, device, options, trials=trials)
    marks.append(time.perf_counter())
    update = _shared_update(setup, setup.case.client)
    utility = _utility(setup, update)
    marks.append(time.perf_counter())
    seen = update.seen_by_server(setup.case.threat.hyper)
    knowledge = _attacker_knowledge(setup, seen)
    marks.append(time.perf_counter())
    build_s, client_s, prepare_s = (b - a for a, b in itertools.pairwise(marks))
    return _Pending(setup=setup, update=seen, knowledge=knowledge, durations=(build_s, client_s, prepare_s),
                    utility=utility)


def _shared_update(s: _Setup, client: ClientSpec) -> ClientUpdate:
    """The update the server receives: the client's, or under secure aggregation the mean of every aggregated
    client's (client ``k`` trains on its share of ``s.batch`` with seed ``client seed + k``)."""
    images = s.batch.images.to(s.device)
    seed = s.options.seeds["client"]
    if s.options.client is not None:
        from giacheck.fl import capture  # lazy: only a captured case needs the framework

        if s.clients != 1:
            raise InvalidCaseError("secure aggregation is simulated; a captured framework client is one client "
                                   "(drop -def_secaggM)")
        update, record = capture(s.options.client, s.model, images, s.labels, client, seed=seed)
        return replace(update, captured=record)
    if s.clients == 1:
        return simulate_update(s.model, images, s.labels, client, seed=seed)
    updates = [simulate_update(s.model, x, y, client, seed=seed + k)
               for k, (x, y) in enumerate(zip(images.chunk(s.clients), s.labels.chunk(s.clients), strict=True))]
    mean = {n: sum(u.tensors[n] for u in updates) / s.clients for n in updates[0].tensors}
    return replace(updates[0], tensors=mean, clients=s.clients, input_shape=tuple(images.shape))


UTILITY_IMAGES = 8  # held-out images the utility's loss decrease is measured on


def _utility(s: _Setup, defended: ClientUpdate) -> dict[str, Any] | None:
    """How useful the defended update is beside the undefended one (same clients, images and seeds; secure
    aggregation kept, it loses nothing): their cosine, and the first-order decrease of the training loss on
    held-out images (none of the client's, the model state's or the calibration images) along the step each
    gives, with their ratio. None for an undefended case."""
    tokens = s.case.client.defences
    kept = tuple(t for t, d in zip(tokens, make_defences(tokens), strict=True) if d.stage is DefenceStage.AGGREGATE)
    if not tokens or kept == tokens:
        return None
    reference = _shared_update(s, replace(s.case.client, defences=kept))
    a = torch.cat([defended.tensors[n].flatten().double() for n in defended.tensors])
    b = torch.cat([reference.tensors[n].flatten().double() for n in defended.tensors])
    used = list(dict.fromkeys((*s.batch.names, *s.state.images, *_calibration(s.source))))
    held = disjoint_pool(s.source, exclude=used, count=min(UTILITY_IMAGES, len(s.source) - len(used)),
                         size=s.case.model.resolution)
    gradient = _heldout_gradient(s, held.images.to(s.device), s.task.targets(held, s.device))
    descent, reference_descent = (_descent(gradient, u) for u in (defended, reference))
    return {"cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            "descent": descent, "reference_descent": reference_descent,
            "relative_descent": descent / reference_descent if reference_descent > 0 else None,
            "images": list(held.names),
            "note": "cosine to the undefended update; descent: first-order decrease of the mean training loss on "
                    "the held-out images along the update's step (FedAvg: the delta; FedSGD: minus the gradient "
                    "times the client's learning rate); relative_descent: the defended update's over the "
                    "undefended one's (1: as useful; 0: useless; negative: harmful; null when the undefended "
                    "update does not descend)"}


def _heldout_gradient(s: _Setup, x: torch.Tensor, y: Any) -> dict[str, torch.Tensor]:
    """The held-out training loss's gradient at the global model, BatchNorm in inference mode."""
    model, was = s.model, s.model.training
    model.eval()
    try:
        params = dict(model.named_parameters())
        grads = torch.autograd.grad(loss_of(model)(model(x), y), list(params.values()), allow_unused=True)
    finally:
        model.train(was)
    return {n: g.detach() for n, g in zip(params, grads, strict=True) if g is not None}


def _descent(gradient: dict[str, torch.Tensor], update: ClientUpdate) -> float:
    scale = 1.0 if update.kind is UpdateKind.FEDAVG else -update.local_lr
    return -scale * float(sum((gradient[n].double() * update.tensors[n].double()).sum()
                              for n in update.tensors if n in gradient))


def _attack_groups(pending: list[_Pending]) -> list[list[int]]:
    """Trial indices grouped by attack, budget and identical global model (equal parameters and buffers), in
    order: the trials one attack call may run together."""
    groups: list[list[int]] = []
    for i, p in enumerate(pending):
        for group in groups:
            first = pending[group[0]].setup
            if (first.case.attack, first.spec) == (p.setup.case.attack, p.setup.spec) \
                    and _equal_models(first.model, p.setup.model):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _equal_models(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def _attack_group(group: list[_Pending]) -> list[Any]:
    """The attacks of trials on one global model: together through ``attack.trials`` where the attack has it."""
    first = group[0].setup
    together = getattr(first.attack, "trials", None)
    if len(group) > 1 and callable(together):
        recs = list(together(first.model, [Trial(update=p.update, labels=p.knowledge.labels, stats=p.knowledge.stats,
                                                 init=p.knowledge.init, seed=p.setup.options.seed) for p in group]))
        if len(recs) != len(group):
            raise GiacheckError(f"attack {first.case.attack!r}.trials returned {len(recs)} reconstructions for "
                                f"{len(group)} trials; it returns one per trial, in order")
        return recs
    return [p.setup.attack(p.setup.model, p.update, labels=p.knowledge.labels, stats=p.knowledge.stats,
                           init=p.knowledge.init, seed=p.setup.options.seed) for p in group]


def image_signal(case: Case | str, *, profile: str = "smoke", device: str = "cpu",
                 options: RunOptions | None = None) -> float:
    """How much the client's update depends on its images (an auditor-side diagnostic, no attack): 1 − cos
    between the update on the private batch and the update on a uniform gray batch with the same targets, over
    all shared tensors. Near 0: the update says almost nothing about the image (e.g. inference-mode BatchNorm at
    random initialization, where deep activations vanish)."""
    options = options or RunOptions()
    s = _prepare(_with_weights_state(case, options), profile, device, options)
    images = s.batch.images.to(s.device)
    seed = s.options.seeds["client"]
    true = simulate_update(s.model, images, s.labels, s.case.client, seed=seed).tensors
    gray = simulate_update(s.model, torch.full_like(images, 0.5), s.labels, s.case.client, seed=seed).tensors
    a = torch.cat([true[n].flatten().double() for n in true])
    b = torch.cat([gray[n].flatten().double() for n in true])
    return float(1 - torch.nn.functional.cosine_similarity(a, b, dim=0))


def _with_weights_state(case: Case | str, options: RunOptions) -> Case:
    """``case`` parsed; at the default state ``random`` with a weights file given, at state ``ckpt``."""
    case = Case.parse(case) if isinstance(case, str) else case
    return case.with_(state="ckpt") if options.weights is not None and case.state == "random" else case


def _prepare(case: Case, profile: str, device: str, options: RunOptions, *, trials: int = 1) -> _Setup:
    """Look up and check everything, then build the global model and draw the client's batch; the memory check
    counts the attacks that may run stacked with this one (``trials`` of the case, each ``spec.restarts``)."""
    spec = options.budget or get_profile(profile).attack
    entry = get_entry(case.model.name)
    task = get_task(entry.task)
    source = open_source(options.data, num_classes=entry.num_classes)
    source.verify()  # every image decodes (remembered within a process): a bad file is named before compute
    torch_device = resolve_device(device)
    per_chunk = max(1, MAX_STACKED // spec.restarts)
    check_case(case, entry=entry, source=source, device=torch_device,
               restarts=spec.restarts * min(trials, per_chunk) if spec.batched_restarts and task.batchable_trials
               else 1)
    if options.weights is not None:
        check_weights_file(options.weights)  # readable, safe and finite: before the model is built
    attack = make_attack(case.attack, spec if task.batchable_trials else replace(spec, batched_restarts=False))
    batch = task.client_batch(source, batch_size=case.client.batch_size, size=case.model.resolution,
                              first=options.image)
    auxiliary = auxiliary_images(source, exclude=batch.names) if case.state not in ("random", "ckpt") else ()
    _check_pool_left(source, batch, case, auxiliary)
    seeds = options.seeds
    model = build(case.model.name, case.model.resolution, seed=seeds["model"]).to(torch_device)
    defences = make_defences(case.client.defences)
    model_change = _make_private(model, case) if any(isinstance(d, DPSGD) for d in defences) else None
    clients = aggregation_size(defences)
    if clients > 1:
        batch = _aggregate_batch(source, batch, case, clients, auxiliary)
    if case.client.bn_mode is BNMode.TRAIN and model_change is None:
        _check_train_mode_bn(model, (case.client.minibatch or case.client.batch_size, *batch.images.shape[1:]), case)
    state = prepare_state(model, case.state, source=source, images=auxiliary, resolution=case.model.resolution,
                          model_seed=seeds["model"], pinned_seed=options.model_seed, task=task,
                          model_name=case.model.name, weights=options.weights, device=torch_device)
    return _Setup(case=case, profile=profile, options=options, spec=spec, entry=entry, task=task, source=source,
                  attack=attack, device=torch_device, batch=batch, model=model,
                  labels=task.targets(batch, torch_device), state=state, clients=clients, model_change=model_change)


def _make_private(model: torch.nn.Module, case: Case) -> str:
    """Make the model one Opacus can train with DP-SGD (``ModuleValidator.fix``: BatchNorm → GroupNorm), in
    place, before its state is prepared; refuse one it still cannot (before any compute)."""
    from opacus.validators import ModuleValidator

    net = getattr(model, "net", model)
    fixed = ModuleValidator.fix(net)
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise InvalidCaseError(f"invalid case {case.id}: Opacus cannot make {case.model.name} private even after "
                               f"ModuleValidator.fix: {'; '.join(str(e) for e in errors)} (valid: a model whose "
                               "layers Opacus supports)")
    if hasattr(model, "net"):
        model.net = fixed
    changed = sum(isinstance(m, torch.nn.GroupNorm) for m in fixed.modules()) \
        - sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    return (f"BatchNorm→GroupNorm in {changed} modules (opacus ModuleValidator.fix) for DP-SGD"
            if changed else "none needed: Opacus supports the model as built (ModuleValidator.validate)")


def _aggregate_batch(source: ImageSource, batch: ImageBatch, case: Case, clients: int,
                     auxiliary: tuple[str, ...]) -> ImageBatch:
    """The target's batch followed by each other aggregated client's, drawn from images disjoint from the
    target's, the model state's and the calibration images."""
    others = disjoint_pool(source, exclude=list(dict.fromkeys((*batch.names, *auxiliary, *_calibration(source)))),
                           count=(clients - 1) * case.client.batch_size, size=case.model.resolution)
    return ImageBatch(images=torch.cat([batch.images, others.images]),
                      labels=torch.cat([batch.labels, others.labels]), names=(*batch.names, *others.names))


def _attacker_knowledge(s: _Setup, update: ClientUpdate) -> _Knowledge:
    """The labels (known or inferred), the statistics target and the starting images the threat model gives."""
    accuracy = inferred = None
    if s.case.threat.labels is LabelKnowledge.INFERRED:
        labels = infer_labels(update, s.entry.num_classes)
        accuracy, inferred = _multiset_accuracy(labels, s.labels), labels.tolist()
    else:
        labels = s.labels
    stats, proxy = _stats_target(s, update, labels)
    init = init_ssim = fraction = denoised = None
    if s.case.init_p is not None:
        init, fraction = ladder_init(s.batch.images, s.case.init_p, restarts=s.spec.restarts, seed=s.options.seed)
        init_ssim = metrics.match_and_score(init[0], s.batch.images).ssim_mean
        denoised = denoised_ssim(init[0], s.batch.images)
    defences = [{"token": d.token, "name": d.name, "stage": str(d.stage), "params": d.params()}
                for d in make_defences(s.case.client.defences)]
    client = s.case.client
    epsilons = privacy(make_defences(client.defences), dataset_size=client.batch_size, minibatch=client.minibatch,
                       epochs=client.local_steps)
    threat = Threat(stats=str(s.case.threat.stats), labels=str(s.case.threat.labels), label_accuracy=accuracy,
                    inferred_labels=inferred, proxy=proxy, init_ssim=init_ssim, init_fraction=fraction,
                    denoised_ssim=denoised, defences=defences or None, privacy=epsilons or None,
                    hyper=str(s.case.threat.hyper), assumed=_assumed(s.case, update),
                    clients=s.clients if s.clients > 1 else None, framework=update.captured)
    return _Knowledge(labels=labels, stats=stats, init=init, threat=threat,
                      auxiliary=tuple(proxy.pool) if proxy is not None else ())


def _assumed(case: Case, seen: ClientUpdate) -> str | None:
    """What the replica assumed of the client's local training where the server did not know it."""
    hyper, client = case.threat.hyper, case.client
    if hyper is HyperKnowledge.UNKNOWN and seen.client != client:
        return (f"local training unknown: the replica ran one full-batch plain-SGD step at lr "
                f"{seen.client.local_lr:g}" if client.update is UpdateKind.FEDAVG else
                "local training unknown: the replica assumed no augmentation")
    if hyper is not HyperKnowledge.DRAWS and (client.minibatch is not None or client.augment != "none"):
        return "data order and augmentation draws unknown: the replica drew its own order (seed 0), no augmentation"
    return None


def _score(s: _Setup, rec: Reconstruction, knowledge: _Knowledge, update: ClientUpdate,
           durations: tuple[float, float, float, float]) -> Result:
    """Match and score the selected restart against the private images (the only use of ground truth), and
    re-identify each matched image against a held-out pool disjoint from the client's and the attacker's images.
    ``durations``: build, client, prepare and attack seconds (a stacked attack's share)."""
    start = time.perf_counter()
    truth = truth_objective(s.case.attack, s.spec, s.model, update, s.batch.images,
                            labels=knowledge.labels, stats=knowledge.stats)  # after the attack returned
    original = s.batch.images
    per_restart = [metrics.match_and_score(rec.images[r], original) for r in range(s.spec.restarts)]
    scores = per_restart[rec.selected]
    oracle_index = max(range(s.spec.restarts), key=lambda r: per_restart[r].ssim_mean)
    patch = max(4, s.case.model.resolution // 8)
    patch_ssim = metrics.patch_matched_ssim_batch(rec.best, original, patch=patch, perm=scores.perm)
    matched = rec.best[list(scores.perm)].cpu()  # reordered: matched[j] is the reconstruction of original[j]
    excluded = tuple(dict.fromkeys((*s.batch.names, *knowledge.auxiliary, *s.state.images, *_calibration(s.source))))
    pool = heldout_pool(s.source, exclude=list(excluded), size=s.case.model.resolution, limit=POOL_LIMIT)
    reids = reidentify_batch(matched, original.cpu(), pool.images, patch=patch)
    nulls = _null_p_values(original.cpu(), pool.images)
    build_s, client_s, prepare_s, attack_s = durations
    metrics_s = time.perf_counter() - start
    return Result(
        case_id=s.case.id,
        profile=s.profile,
        seed=s.options.seed,
        ssim=scores.ssim,
        psnr=scores.psnr,
        patch_ssim=patch_ssim,
        objective=rec.objective[rec.selected],
        grad_distance=rec.grad_distance[rec.selected],
        curve=tuple(rec.curve[:, rec.selected].tolist()),
        iterations=rec.iterations,
        restarts=s.spec.restarts,
        selection=Selection.OBJECTIVE,
        oracle=Oracle(restart=oracle_index, ssim_mean=per_restart[oracle_index].ssim_mean,
                      selected_restart=rec.selected),
        attack=AttackInfo(name=s.case.attack, spec=s.spec, batched=rec.batched, patch_size=patch),
        threat=knowledge.threat,
        timings=Timings(build_s=build_s, client_s=client_s, prepare_s=prepare_s, attack_s=attack_s,
                        per_iteration_s=attack_s / s.spec.iterations, metrics_s=metrics_s,
                        total_s=build_s + client_s + prepare_s + attack_s + metrics_s),
        manifest=replace(manifest(s.device, s.options.seed, data=s.source.name, images=s.batch.names,
                                  model=s.entry.upstream, seeds=s.options.seeds), model_change=s.model_change),
        model_state=s.state,
        reid=Reid(image=s.batch.names[0], per_image=[{**r.to_dict(), "null_p_values": null}
                                                     for r, null in zip(reids, nulls, strict=True)],
                  pool_size=len(pool.names),
                  pool=f"{s.source.name}: {len(pool.names)} views of images other than the client's "
                       f"{len(s.batch.names)}, the attacker's {len(knowledge.auxiliary)} auxiliary ones, the "
                       f"{len(s.state.images)} the model state was made from and the "
                       f"{len(_calibration(s.source))} the defaults were tuned on, recoloured to each private "
                       "image's colour statistics"),
        truth=Truth(objective=truth),
        original=original.cpu(),
        reconstruction=matched,
    )


NULL_DRAWS = 3  # uniform-noise "reconstructions" per private image that check the pool's exchangeability


def _null_p_values(original: torch.Tensor, pool: torch.Tensor) -> list[list[float]]:
    """Per private image, the re-identification p-values of :data:`NULL_DRAWS` uniform-noise images (what the
    attack starts from, independent of the image): a pool exchangeable with the image re-identifies them only by
    chance. An image whose noise is re-identified (an atypical image: nearly black, say) cannot be judged
    against this pool (:attr:`giacheck.verdicts.ImageEvidence.valid`)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for x in original:
        noise = torch.rand((NULL_DRAWS, *x.shape), generator=gen)
        out.append([reidentify(n, x, pool).p_value for n in noise])
    return out


def _calibration(source: ImageSource) -> tuple[str, ...]:
    """The images of ``source`` the profiles' hyper-parameters were tuned on: never in a re-identification pool."""
    names = {source.image_name(i) for i in range(len(source))}
    return tuple(name for name in CALIBRATION_IMAGES if name in names) if source.name == "bundled" else ()


def _check_pool_left(source: ImageSource, batch: ImageBatch, case: Case, auxiliary: tuple[str, ...]) -> None:
    """Some image must be left for the re-identification pool: checked before any compute."""
    used = {*batch.names, *auxiliary, *_calibration(source)}
    if len(source) - len(used) < 1:
        raise GiacheckError(f"{case.id}: no image of {source.name} is left for the re-identification pool after "
                            f"the client's {len(batch.names)}, the model state's {len(auxiliary)} and "
                            f"{len(_calibration(source))} calibration images; give a source with more images (--data)")


def _check_train_mode_bn(model: torch.nn.Module, input_shape: tuple[int, ...], case: Case) -> None:
    """A train-mode BatchNorm that sees one value per channel (B·H·W = 1) cannot normalize: refuse up front."""
    names = list(bn_modules(model))
    single = [n for n, count in elements_per_channel(model, input_shape, names).items() if count < 2]
    if single:
        raise InvalidCaseError(
            f"invalid case {case.id}: in train mode BatchNorm {single[0]!r} (and {len(single) - 1} more) sees one "
            f"value per channel (B·H·W = 1 at batch size {case.client.batch_size}); valid: bn_eval, or a batch "
            "size or resolution that leaves more than one value per channel")


def _stats_target(s: _Setup, update: ClientUpdate, labels: Any) -> tuple[NormTarget | None, ProxyChoiceRecord | None]:
    """The normalization-statistics target the threat model gives the attacker (None for ``stats_none``)."""
    access = s.case.threat.stats
    if access is StatsAccess.EXACT:
        names = list(update.bn_after)
        return infer_batch_stats(update.bn_before, update.bn_after,
                                 elements_per_channel(s.model, update.input_shape, names)), None
    if access is StatsAccess.NAIVE:
        return naive_stats(update.bn_after), None
    if access is StatsAccess.PROXY:
        return _proxy_stats(s, update, labels)
    return None, None


def _check_reconstruction(rec: Any, case: Case, spec: AttackSpec, shape: tuple[int, ...]) -> None:
    """A plug-in attack's result must hold one image batch per restart, and one objective per restart."""
    if not isinstance(rec, Reconstruction):
        raise GiacheckError(f"attack {case.attack!r} returned {type(rec).__name__}; an attack returns a "
                            "giacheck.attack.Reconstruction")
    problems = []
    if tuple(rec.images.shape) != (spec.restarts, *shape):
        problems.append(f"images of shape {tuple(rec.images.shape)}, expected (restarts, B, C, H, W) = "
                        f"{(spec.restarts, *shape)}")
    if len(rec.objective) != spec.restarts or len(rec.grad_distance) != spec.restarts:
        problems.append(f"{len(rec.objective)} objectives and {len(rec.grad_distance)} distances for "
                        f"{spec.restarts} restarts")
    if not 0 <= rec.selected < spec.restarts:
        problems.append(f"selected restart {rec.selected} of {spec.restarts}")
    if problems:
        raise GiacheckError(f"attack {case.attack!r} returned a malformed reconstruction: " + "; ".join(problems))


def _proxy_stats(s: _Setup, update: ClientUpdate, labels: Any) -> tuple[NormTarget, ProxyChoiceRecord]:
    """Statistics of the auxiliary batch (disjoint from the client's) whose update is nearest the client's."""
    batch = s.case.client.batch_size
    available = len(s.source) - batch
    candidates = min(s.spec.proxy_candidates, available // batch)
    if candidates < 1:
        raise GiacheckError(f"stats_proxy needs at least {batch} auxiliary images besides the client's "
                            f"{batch}; {s.source.name} has {len(s.source)} images in all")
    pool = disjoint_pool(s.source, exclude=list(s.batch.names), count=candidates * batch,
                         size=s.case.model.resolution)
    view = getattr(s.attack, "view", None)  # the update as the attack's objective sees it (gradmatch_rescaled)
    replica = Replica(s.model, view(update) if callable(view) else update, labels)
    choice = select_proxy_stats(replica, pool.images.to(s.device), distance=s.spec.distance)
    return choice.target, ProxyChoiceRecord(candidates=candidates, chosen=choice.chosen,
                                            grad_distances=list(choice.distances), pool=list(pool.names))


def _multiset_accuracy(inferred: torch.Tensor, truth: torch.Tensor) -> float:
    remaining = truth.tolist()
    hits = 0
    for label in inferred.tolist():
        if label in remaining:
            remaining.remove(label)
            hits += 1
    return hits / truth.numel()


def resolve_device(device: str) -> torch.device:
    """The torch device named by ``device``: ``cpu``, or ``cuda``/``cuda:N`` for a GPU this machine has.

    Raises:
        GiacheckError: an unknown name, a device type giacheck does not run on (``meta``, ``mps``…), CUDA where
            there is none, or a GPU index this machine does not have.
    """
    valid = "valid: 'cpu', 'cuda', 'cuda:N' with N a GPU index of this machine"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise GiacheckError(f"unknown device {device!r}; {valid}") from None
    if dev.type not in ("cpu", "cuda"):
        raise GiacheckError(f"device {device!r}: giacheck runs attacks on the CPU or on CUDA GPUs, not on "
                            f"{dev.type!r}; {valid}")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise GiacheckError(f"device {device!r}: there is one CPU device; {valid}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GiacheckError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise GiacheckError(f"device {device!r}: this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1}); "
                                f"{valid}")
    return dev
