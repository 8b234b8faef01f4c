"""The ``giacheck`` command: ``run`` one case, ``audit`` a model's deployment grid, scaffold a test pack
(``init-pack``), merge results into a ``report``, ``bench`` the attack, list ``models``.

Model strings ``package.module:function`` are imported with the working directory at the end of the import
path, after giacheck's own imports: a module there never shadows an installed package.

Exit status, the same for every command:
  0    ok: what was asked ran, and (audit) no configuration leaks an identifiable image
  1    audit: a configuration leaks (feasible above its rule)
  2    bad input (options, files, model code that raises or exits), refused before any compute
  3    audit: inconclusive (the positive control did not reconstruct under the same budget, or a
       score is not finite)
  4    internal error: something failed while running (named; finished results are kept)
  130  interrupted (Ctrl-C); a rerun of the same audit resumes it
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from giacheck.errors import GiacheckError
from giacheck.specs import DEFAULT_ATTACK, PROFILES, Case

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "main"]

log = logging.getLogger("giacheck.cli")

EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 4, 130
_SEED_MAX = 2**63 - 1  # torch.manual_seed takes a 64-bit seed; numpy and the client's generators int64


def _bounded_int(low: int, high: int | None = None, what: str = "a whole number"):
    """An argparse ``type``: a whole number in [low, high]; anything else is a usage error (exit 2) saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {what}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range; give {what}")
        return value

    parse.__name__ = "int"
    return parse


_SEED = _bounded_int(0, _SEED_MAX, f"a seed from 0 to {_SEED_MAX}")
_POSITIVE = _bounded_int(1, None, "a whole number >= 1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="giacheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a client update for one case, attack it and score the result")
    run.add_argument("case_id", help="e.g. resnet18_cifar-32-bn_eval-bs1-stats_none")
    run.add_argument("--profile", default="smoke", choices=sorted(PROFILES), help="attack budget (default: smoke)")
    run.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    run.add_argument("--seed", type=_SEED, default=0, help="the attack's seed; also the model's and the client's "
                     "unless --model-seed / --client-seed are given (default: 0)")
    run.add_argument("--model-seed", type=_SEED, help="seed of the model's random initialization (default: --seed)")
    run.add_argument("--client-seed", type=_SEED, help="seed of the client's data order and defences (default: --seed)")
    run.add_argument("--weights", type=Path, help="local weights file the global model starts from (safetensors or a "
                     "torch.save state dict; the case runs at state ckpt)")
    run.add_argument("--data", default="bundled",
                     help="image source: bundled, imagefolder:PATH, cifar10:PATH or PATH (default: bundled)")
    run.add_argument("--iterations", type=_POSITIVE, help="override the profile's iteration budget")
    run.add_argument("--restarts", type=_POSITIVE, help="override the profile's number of restarts")
    run.add_argument("--attack", help="attack to run when the case id names none (a registered name or "
                                      "package.module:Name; default: the built-in gradmatch)")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--out", type=Path, help="write <case-id>.png (original above reconstruction) and .json here")

    run.add_argument("--image", help="the private image the client's batch starts with (a name in the source; "
                                     "default: the source's first)")

    challenge = sub.add_parser("challenge", help="rank candidate private images by vulnerability on a reference "
                                                 "case (Appendix A), by the attack's own update distance only")
    challenge.add_argument("reference", help="reference case id, e.g. resnet18_cifar-32-bn_eval-bs1-stats_none")
    challenge.add_argument("candidates", nargs="+", help="candidate image names in the source")
    challenge.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    challenge.add_argument("--device", default="cpu")
    challenge.add_argument("--data", default="bundled")
    challenge.add_argument("--iterations", type=_POSITIVE, default=100, help="iterations of each short attack")
    challenge.add_argument("--seed", type=_SEED, default=0)

    signal = sub.add_parser("signal", help="how much a case's update depends on its image: 1 - cos against the "
                            "update of a gray image (an auditor diagnostic; no attack runs)")
    signal.add_argument("case_ids", nargs="+", help="case ids, e.g. yolov8n-256-bn_eval-bs1-stats_none-state_bncal")
    signal.add_argument("--device", default="cpu")
    signal.add_argument("--data", default="bundled")
    signal.add_argument("--image", help="the private image the client's batch starts with")
    signal.add_argument("--seed", type=_SEED, default=0)
    signal.add_argument("--weights", type=Path, help="local weights file (the case runs at state ckpt)")
    bench = sub.add_parser("bench", help="measure attack cost: per iteration, against training, stacked trials "
                           "against one after another (see giacheck.bench)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--steps", type=_POSITIVE, default=10, help="iterations per timed run")
    bench.add_argument("--repeats", type=_POSITIVE, default=3, help="interleaved rounds; medians are reported")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--models", nargs="+", metavar="MODEL",
                       help="models to measure (default: resnet18_cifar swin_t_cifar convnext_t_cifar at 32 px, "
                            "plus swin_t and resnet18 at 224 px with a CUDA device)")
    bench.add_argument("--resolution", type=_POSITIVE, help="input size for --models (default: each model's own)")
    bench.add_argument("--trials", type=_POSITIVE, default=8, help="attacks stacked against run in a row")
    bench.add_argument("--threads", type=_POSITIVE, default=1, help="torch CPU threads (default: 1, as the "
                       "suites run)")
    bench.add_argument("--memory", action="store_true",
                       help="also the peak memory of the stacked and the sequential path (each in a fresh process)")
    bench.add_argument("--defences", nargs="*", metavar="CHAIN",
                       help="gradmatch against gradmatch_rescaled on updates under defence chains that only rescale "
                            "them ('+'-joined tokens; default: dpsgd1 clip1+noise1), two GroupNorm ResNet-18 trials")
    bench.add_argument("--kernels", nargs="*", metavar="MODEL",
                       help="attack iterations with stock PyTorch vs giacheck's kernels (depthwise convolution, "
                            "factored update distance), per model (default: resnet18_cifar swin_t_cifar "
                            "convnext_t_cifar)")

    models = sub.add_parser("models", help="list registered models with their metadata")
    models.add_argument("--json", action="store_true")

    audit = sub.add_parser("audit", help="attack a model over a grid of deployment settings; report; exit 1 if it "
                                         "leaks (0 ok, 1 leaks, 2 bad input, 3 inconclusive, 4 error; rerun to "
                                         "resume an unfinished audit)")
    _pack_arguments(audit)
    audit.add_argument("--profile", default="smoke", choices=sorted(PROFILES), help="attack budget (default: smoke)")
    audit.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    audit.add_argument("--out", type=Path, required=True,
                       help="folder for results.json, PNGs, report.html and report.md: new, empty, or a previous "
                            "audit's (nothing else in it is overwritten)")
    audit.add_argument("--fresh", action="store_true",
                       help="discard an unfinished audit's journal in --out instead of resuming it")
    audit.add_argument("--flower-app", metavar="PKG.MOD:ATTR",
                       help="capture a real Flower client's round (a ClientApp, a NumPyClient or a client_fn) in "
                            "place of the simulated client; needs pip install 'giacheck[flower]' and --updates "
                            "fedavgK")
    audit.add_argument("--fedn-train", metavar="PKG.MOD:TRAIN",
                       help="capture a Scaleout Edge (FEDn) train callback's round in place of the simulated client; "
                            "needs pip install 'giacheck[fedn]' and --updates fedavgK")
    audit.add_argument("--flower-config", default="", metavar="KEY=VALUE,…",
                       help="what the server adds to the train config (e.g. clipping_norm=1.0 for Flower's DP "
                            "clipping mods)")
    audit.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar (default: when standard error is a terminal; log lines otherwise)")

    init = sub.add_parser("init-pack", help="scaffold a privacy test pack (test module, baselines/, README)")
    init.add_argument("folder", type=Path, help="new or empty folder for the pack")
    _pack_arguments(init)

    report = sub.add_parser("report", help="merge results of runs, workers or machines into report.html and report.md")
    report.add_argument("results", nargs="+", type=Path,
                        help="suite results.json / results.jsonl, `giacheck run --out` JSONs, or folders holding them; "
                             "for the same case, later ones win")
    report.add_argument("--out", type=Path, required=True,
                        help="folder for report.html, report.md and plots: new, empty, or a previous report")
    return parser


def _pack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define a pack, shared by ``audit`` and ``init-pack``."""
    parser.add_argument("--model", required=True,
                        help="registered name, or package.module:function returning a giacheck.models.ModelEntry or "
                             "a plain torch.nn.Module (called with input_size/resolution and num_classes where its "
                             "signature names them; then --input-size and --num-classes are required)")
    parser.add_argument("--name", help="pack name (baselines folder, case ids; default: from the model)")
    parser.add_argument("--input-size", type=_POSITIVE,
                        help="input resolution (default: the entry's; required for a plain nn.Module)")
    parser.add_argument("--num-classes", type=_POSITIVE,
                        help="number of classes (default: the entry's; required for a plain nn.Module)")
    parser.add_argument("--mean", metavar="R,G,B", help="per-channel mean the model's inputs are normalized with, "
                                                        "three comma-separated numbers (default: the entry's; "
                                                        "ImageNet's 0.485,0.456,0.406 for a plain nn.Module)")
    parser.add_argument("--std", metavar="R,G,B", help="per-channel standard deviation, three comma-separated "
                                                       "numbers (default: the entry's; ImageNet's 0.229,0.224,0.225 "
                                                       "for a plain nn.Module)")
    parser.add_argument("--batch-sizes", default="1", help="comma-separated client batch sizes (default: 1)")
    parser.add_argument("--bn", default="train", help="client BatchNorm modes: train,eval (default: train)")
    parser.add_argument("--stats", default="none", help="BN-statistics access: none,naive,exact,proxy (default: none)")
    parser.add_argument("--updates", default="fedsgd", help="update types: fedsgd,fedavgK (default: fedsgd)")
    parser.add_argument("--defences", default="none", help="the client's defence chains, comma-separated, each "
                        "'+'-joined, 'none' for no defence: e.g. none,dpsgd1,clip1+noise0.01,prune0.99,quant4,"
                        "secagg4 (default: none)")
    parser.add_argument("--minibatches", default="", help="FedAvg images per local step, comma-separated "
                        "(default: the whole batch)")
    parser.add_argument("--optimizers", default="sgd", help="FedAvg optimizers: sgd, momentumM, nesterovM, adam "
                        "(default: sgd)")
    parser.add_argument("--weight-decays", default="0", help="the client's weight decays (default: 0)")
    parser.add_argument("--lrs", default="0.01", help="the client's local learning rates (default: 0.01)")
    parser.add_argument("--augments", default="none", help="client augmentation: none, flip, crop, cropflip "
                        "(default: none)")
    parser.add_argument("--hyper", default="known", help="what the server knows of the local training: known, "
                        "draws (also its data order and augmentation draws), unknown (default: known)")
    parser.add_argument("--states", default=None, help="model states: random,bncal,warmN (default: random; ckpt "
                        "with --weights)")
    parser.add_argument("--weights", type=Path, help="the checkpoint to audit: a local safetensors file or torch.save "
                        "state dict for --model (its sha256 is part of every baseline's identity)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="besides re-identification (the rule every configuration is judged by: no image of "
                             "any trial identifiable against a held-out pool), no image may exceed this SSIM "
                             "(default: no SSIM cutoff)")
    parser.add_argument("--rule", action="append", default=[], metavar="WHERE:MAX_SSIM",
                        help="an extra rule, e.g. 'bs>=8:0.1' (configurations with bs >= 8: no image re-identified "
                             "and none above SSIM 0.1)")
    parser.add_argument("--control", help="positive control case id (default: the sigmoid LeNet at the input size)")
    parser.add_argument("--data", default="bundled", help="image source: bundled, imagefolder:PATH, cifar10:PATH")
    parser.add_argument("--seed", type=_SEED, default=0)
    parser.add_argument("--attack", default=DEFAULT_ATTACK,
                        help="attack run on every configuration and on the control (a registered name or "
                             f"package.module:Name; default: {DEFAULT_ATTACK})")


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise GiacheckError(f"--batch-sizes {text!r}: give comma-separated whole numbers, e.g. 1,8") from None


def _numbers(flag: str, text: str, kind: type, *, allow_empty: bool = False) -> tuple:
    """A comma-separated list of numbers (``allow_empty``: ``""`` is one absent value, the whole batch)."""
    if allow_empty and not text.strip():
        return (None,)
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise GiacheckError(f"{flag} {text!r}: give comma-separated {'whole ' if kind is int else ''}numbers, "
                            f"e.g. {'1,4' if kind is int else '0.01,0.1'}") from None


def _pack_from(args: argparse.Namespace):
    """A :class:`giacheck.pack.Pack` from the command line (validated when it is planned)."""
    from giacheck.pack import Grid, Pack, Rule

    rules = [Rule("no configuration leaks an identifiable image" if args.threshold is None else
                  f"no configuration leaks an identifiable image or an image above SSIM {args.threshold:g}",
                  max_ssim=args.threshold)]
    for text in args.rule:
        where, sep, limit = text.rpartition(":")
        try:
            max_ssim = float(limit)
        except ValueError:
            max_ssim = None
        if not sep or max_ssim is None:
            raise GiacheckError(f"--rule {text!r}: write WHERE:MAX_SSIM, e.g. 'bs>=8:0.1'")
        rules.append(Rule(f"{where}: no image re-identified or above SSIM {limit}", max_ssim=max_ssim, where=where))
    channels: dict[str, tuple[float, ...]] = {}
    for flag in ("mean", "std"):
        text = getattr(args, flag)
        if text is None:
            continue
        try:
            channels[flag] = tuple(float(v) for v in text.split(","))
        except ValueError:
            channels[flag] = ()
        if len(channels[flag]) != 3:
            raise GiacheckError(f"--{flag} {text!r}: give three comma-separated numbers (R,G,B), e.g. "
                                f"{'0.485,0.456,0.406' if flag == 'mean' else '0.229,0.224,0.225'}")
    states = args.states or ("ckpt" if args.weights is not None else "random")
    grid = Grid(batch_sizes=_batch_sizes(args.batch_sizes), bn=args.bn, stats=args.stats, updates=args.updates,
                states=states,
                defences=tuple("" if c.strip() == "none" else c.strip() for c in args.defences.split(",")),
                minibatches=_numbers("--minibatches", args.minibatches, int, allow_empty=True),
                optimizers=args.optimizers, weight_decays=_numbers("--weight-decays", args.weight_decays, float),
                lrs=_numbers("--lrs", args.lrs, float), augments=args.augments, hyper=args.hyper)
    return Pack(name=args.name or _pack_name(args.model), model=args.model, grid=grid, rules=tuple(rules),
                input_size=args.input_size, num_classes=args.num_classes, mean=channels.get("mean"),
                std=channels.get("std"), control=args.control, data=args.data, seed=args.seed,
                attacker=args.attack, weights=args.weights)


def _pack_name(model: str) -> str:
    """``acme.models:classifier`` → ``classifier``; a registered name gets ``_pack`` (aliases may not shadow it)."""
    from giacheck.models import list_models

    name = re.sub(r"\W", "_", model.rpartition(":")[2] or model).strip("_") or "pack"
    name = name if name[0].isalpha() else f"pack_{name}"
    return f"{name}_pack" if name in list_models() else name


def _config(text: str) -> dict[str, float | int | str]:
    """``--flower-config`` as a dict: numbers where they parse as numbers."""
    out: dict[str, float | int | str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GiacheckError(f"--flower-config {item!r}: write KEY=VALUE, e.g. clipping_norm=1.0")
        for cast in (int, float, str):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
    return out


def _cmd_audit(args: argparse.Namespace) -> int:
    from giacheck.audit import run_audit

    if args.flower_config and not args.flower_app:
        raise GiacheckError("--flower-config is what the server sends a Flower client: give --flower-app too")
    if args.flower_app and args.fedn_train:
        raise GiacheckError("--flower-app and --fedn-train: an audit captures one client; give one of them")
    pack = _pack_from(args)
    if args.flower_app:
        from giacheck.fl import FlowerClient

        pack = dataclasses.replace(pack, client=FlowerClient(args.flower_app, config=_config(args.flower_config)))
    elif args.fedn_train:
        from giacheck.fl import FednClient

        pack = dataclasses.replace(pack, client=FednClient(args.fedn_train))
    outcome = run_audit(pack, profile=args.profile, device=args.device, out=args.out,
                        progress=args.progress, fresh=args.fresh)
    if outcome.resumed:
        print(f"resumed: {len(outcome.resumed)} finished case(s) kept from {outcome.files['journal']}, "
              "not recomputed")
    for record in outcome.cases:
        ev = record.evidence
        shown = (f"most leaking image {ev.worst_image} SSIM {ev.worst_ssim:.3f} rank {ev.shown_rank} "
                 f"({ev.reidentified}/{ev.tested} re-identified)" if ev else f"SSIM {record.scores.ssim_mean:.3f}")
        print(f"{record.verdict or '?':>12}  {record.case_id:48} {shown}  ({record.claim or 'no claim'})")
    for case_id, why in outcome.not_applicable:
        print(f"{'n/a':>12}  {case_id:48} {why}")
    print(f"report: {outcome.files['html']}")
    print(f"audit: {outcome.verdict} (exit {outcome.exit_code})")
    return outcome.exit_code


def _cmd_init_pack(args: argparse.Namespace) -> int:
    from giacheck.outputs import check_writable
    from giacheck.scaffold import scaffold_pack

    check_writable(args.folder, flag="folder", consequence="nothing was written")
    written = scaffold_pack(args.folder, _pack_from(args))
    for path in written.values():
        print(path)
    print(f"next: pytest {args.folder} -n 2 --giacheck-update-all   (record baselines, then commit them)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from giacheck.artifacts import save_result
    from giacheck.runner import resolve_device, run_case
    from giacheck.specs import RunOptions, get_profile

    attack = get_profile(args.profile).attack
    overrides = {k: v for k, v in (("iterations", args.iterations), ("restarts", args.restarts)) if v is not None}
    attack = dataclasses.replace(attack, **overrides)
    options = RunOptions(seed=args.seed, data=args.data, budget=attack, image=args.image, model_seed=args.model_seed,
                         client_seed=args.client_seed, weights=str(args.weights) if args.weights else None)
    case = Case.parse(args.case_id)
    if args.attack and case.attack == DEFAULT_ATTACK:
        case = case.with_(attack=args.attack)
    if args.out is not None:
        _check_run_out(args.out)
    resolve_device(args.device)
    result = run_case(case, profile=args.profile, device=args.device, options=options)
    if args.out:
        paths = save_result(result, args.out)
        log.info("wrote %s and %s", paths["png"], paths["json"])
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"{result.case_id}: SSIM mean {result.ssim_mean:.3f} max {result.ssim_max:.3f} "
              f"(secondary patch-matched {result.patch_ssim_mean:.3f}), update distance {result.grad_distance:.4f}, "
              f"{result.iterations} iterations x {result.restarts} restarts in {result.timings.attack_s:.1f} s")
        for name, reid in zip(result.manifest.images, result.reid.per_image, strict=True):
            print(f"  {name}: re-identification rank {reid['rank']} of {reid['pool_size'] + 1}, z {reid['z']:+.1f}, "
                  f"p {reid['p_value']:.3g} (pool chance q95 {reid['chance_q95']:.3f}, max {reid['chance_max']:.3f})")
        state = result.model_state
        print(f"  model state: {state.label}" + (f" (sha256 {state.sha256[:12]})" if state.sha256 else "")
              + f"; seeds {', '.join(f'{k} {v}' for k, v in result.manifest.seeds.items())}")
        truth = result.truth.objective
        print(f"  objective {result.objective:.4f}; at the private images (auditor diagnostic) "
              f"{'n/a' if truth is None else f'{truth:.4f}'}")
    return 0


def _check_run_out(out: Path) -> None:
    """``giacheck run --out``: a folder (new or existing) that can be written, checked before the attack."""
    from giacheck.outputs import check_writable

    if out.exists() and not out.is_dir():
        raise GiacheckError(f"--out {out}: is a file, not a folder; nothing was run. Give a folder for "
                            "<case-id>.png and <case-id>.json (new or existing).")
    check_writable(out, consequence="nothing was run")


def _cmd_signal(args: argparse.Namespace) -> int:
    from giacheck.runner import image_signal, resolve_device
    from giacheck.specs import RunOptions

    resolve_device(args.device)
    for case_id in args.case_ids:
        Case.parse(case_id)
    options = RunOptions(seed=args.seed, data=args.data, image=args.image,
                         weights=str(args.weights) if args.weights else None)
    for case_id in args.case_ids:
        value = image_signal(case_id, device=args.device, options=options)
        print(f"{case_id}: 1 - cos(update of the private batch, update of a gray batch) = {value:.3g}")
    return 0


def _cmd_challenge(args: argparse.Namespace) -> int:
    from giacheck.challenge import rank_candidates
    from giacheck.runner import resolve_device

    Case.parse(args.reference)
    resolve_device(args.device)
    ranked = rank_candidates(args.reference, args.candidates, profile=args.profile, device=args.device,
                             data=args.data, iterations=args.iterations, seed=args.seed)
    print(f"candidates by final update distance on {args.reference} after {args.iterations} iterations "
          "(most vulnerable first; no SSIM is read):")
    for c in ranked:
        print(f"  {c.image:24} update distance {c.grad_distance:.5f}  objective {c.objective:.5f}")
    return 0


def _bench_kernels(args: argparse.Namespace) -> int:
    from giacheck.bench import KERNEL_MODELS, run_kernel_bench
    from giacheck.models import get_entry

    for name in args.kernels:
        get_entry(name)  # an unknown model fails here, naming the valid ones, before any compute
    models = tuple(args.kernels) or KERNEL_MODELS
    results = run_kernel_bench(models, device=args.device, steps=args.steps, repeats=args.repeats)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, sort_keys=True))
        return 0
    print(f"attack iteration @32 bs1 eval, device {results[0].device}: stock PyTorch -> giacheck's kernels")
    for r in results:
        print(f"  {r.model:22} {r.stock_iter_s * 1e3:8.1f} ms -> {r.kernels_iter_s * 1e3:8.1f} ms   "
              f"x{r.speedup:.2f}")
    return 0


def _bench_defences(args: argparse.Namespace) -> int:
    from giacheck.bench import DEFENCE_CHAINS, run_defence_bench

    chains = tuple(tuple(c.split("+")) for c in args.defences) or DEFENCE_CHAINS
    rows = run_defence_bench(chains, device=args.device, steps=args.steps, repeats=args.repeats)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, sort_keys=True))
        return 0
    print(f"{rows[0].trials} attacks on {rows[0].model} @32 bs1, device {rows[0].device}: ms per iteration of all, "
          f"gradmatch (defended replica) -> gradmatch_rescaled")
    for r in rows:
        how = "stacked" if r.stacked else "in a row"
        print(f"  {r.chain:22} {r.defended_iter_s * 1e3:8.1f} ms -> {r.rescaled_iter_s * 1e3:8.1f} ms ({how})  "
              f"x{r.speedup:.2f}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from giacheck.bench import run_bench
    from giacheck.models import get_entry
    from giacheck.runner import resolve_device

    resolve_device(args.device)
    torch.set_num_threads(args.threads)
    if args.kernels is not None:
        return _bench_kernels(args)
    if args.defences is not None:
        return _bench_defences(args)
    if args.resolution is not None and not args.models:
        raise GiacheckError("--resolution applies to --models; name the models to measure at it")
    models = None
    if args.models:
        models = tuple((name, get_entry(name).default_size if args.resolution is None else args.resolution)
                       for name in args.models)  # an unknown model fails here, before any compute
    rows = run_bench(models, device=args.device, steps=args.steps, repeats=args.repeats, trials=args.trials,
                     memory=args.memory)
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "models": [r.to_dict() for r in rows]}, indent=2,
                         sort_keys=True))
        return 0
    print(f"one attack and {rows[0].trials} attacks (one private image each, bs1, eval-mode client), device "
          f"{rows[0].device}, {torch.get_num_threads()} thread(s); ms per iteration, medians of {args.repeats} "
          "interleaved rounds")
    k = rows[0].trials
    print(f"  {'model':24} {'train':>7} {'attack':>7} {'bare':>7} {'x train':>7} {'x bare':>7} "
          f"{f'{k} in a row':>10} {f'{k} stacked':>10} {'speed-up':>8}  peak MB, in a row / stacked (attacks' part)")
    for r in rows:
        peaks = (f"{r.peak_sequential_mb:.0f} / {r.peak_batched_mb:.0f} "
                 f"({r.attack_sequential_mb:.0f} / {r.attack_batched_mb:.0f})" if r.peak_batched_mb is not None
                 else "-")
        print(f"  {r.model + '@' + str(r.resolution):24} {r.train_step_s * 1e3:7.1f} {r.attack_iter_s * 1e3:7.1f} "
              f"{r.bare_iter_s * 1e3:7.1f} {r.attack_over_train:7.2f} {r.giacheck_over_bare:7.2f} "
              f"{r.sequential_iter_s * 1e3:10.1f} {r.batched_iter_s * 1e3:10.1f} {r.speedup:8.2f}  {peaks}")
    for r in rows:
        if r.fallback:
            print(f"  {r.model}: runs one after another: {r.fallback}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from giacheck.models import get_entry, list_models

    rows = []
    for name in list_models():
        entry = get_entry(name)
        rows.append({"name": entry.name, "upstream": entry.upstream, "default_size": entry.default_size,
                     "num_classes": entry.num_classes, "mean": entry.mean, "std": entry.std, "task": entry.task,
                     "norm_kinds": list(entry.norm_kinds), "has_batchnorm": entry.has_batchnorm,
                     "description": entry.description})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:24} {row['default_size']:4}px  BN={'yes' if row['has_batchnorm'] else 'no ':3}  "
                  f"{row['upstream']:28} {row['description']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from giacheck.report import load_results, write_report

    for path in write_report(load_results(args.results), args.out).values():
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``giacheck`` console script; returns the exit status (the module docstring's table).

    A :class:`GiacheckError` is bad input (2) with its message; anything else that escapes a command —
    an exception, or a ``SystemExit`` from code giacheck called — is an internal error (4), named, never 0 or 1.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    commands = {"run": _cmd_run, "bench": _cmd_bench, "models": _cmd_models, "report": _cmd_report,
                "audit": _cmd_audit, "init-pack": _cmd_init_pack, "challenge": _cmd_challenge,
                "signal": _cmd_signal}
    try:
        return commands[args.command](args)
    except GiacheckError as exc:
        print(f"giacheck: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        kept = " (finished cases are kept in --out's results.jsonl; rerun the same command to resume)" \
            if args.command == "audit" else ""
        print(f"giacheck: interrupted{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        print(f"giacheck: internal error: code giacheck called during '{args.command}' exited with "
              f"sys.exit({exc.code!r}); the command did not finish and concluded nothing", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # the exit status must say "error", never "ok" or "leaks"
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"giacheck: internal error: '{args.command}' failed with {type(exc).__name__}: {exc}; it concluded "
              "nothing (exit 4). Please report it with the traceback above.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
