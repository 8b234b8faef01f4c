"""The ``giacheck`` command: ``run`` one case, ``bench`` the attack, list ``models``, merge results (``report``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from giacheck.errors import GiacheckError
from giacheck.specs import PROFILES

__all__ = ["main"]

log = logging.getLogger("giacheck.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="giacheck", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a client update for one case, attack it and score the result")
    run.add_argument("case_id", help="e.g. resnet18_cifar-32-bn_eval-bs1-stats_none")
    run.add_argument("--profile", default="smoke", choices=sorted(PROFILES), help="attack budget (default: smoke)")
    run.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--data", default="bundled",
                     help="image source: bundled, imagefolder:PATH, cifar10:PATH or PATH (default: bundled)")
    run.add_argument("--iterations", type=int, help="override the profile's iteration budget")
    run.add_argument("--restarts", type=int, help="override the profile's number of restarts")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--out", type=Path, help="write <case-id>.png (original above reconstruction) and .json here")

    bench = sub.add_parser("bench", help="measure attack cost ratios (see giacheck.bench)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--steps", type=int, default=10, help="iterations per timed run")
    bench.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    bench.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="list registered models with their metadata")
    models.add_argument("--json", action="store_true")

    report = sub.add_parser("report", help="merge results of runs, workers or machines into report.html and report.md")
    report.add_argument("results", nargs="+", type=Path,
                        help="suite results.json / results.jsonl, `giacheck run --out` JSONs, or folders holding them; "
                             "for the same case, later ones win")
    report.add_argument("--out", type=Path, required=True,
                        help="folder for report.html, report.md and plots: new, empty, or a previous report")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from giacheck.artifacts import save_result
    from giacheck.runner import run_case
    from giacheck.specs import get_profile

    attack = get_profile(args.profile).attack
    overrides = {k: v for k, v in (("iterations", args.iterations), ("restarts", args.restarts)) if v is not None}
    attack = dataclasses.replace(attack, **overrides)
    log_every = max(1, attack.iterations // 10)
    result = run_case(args.case_id, profile=args.profile, device=args.device, seed=args.seed, data=args.data,
                      attack=attack, log_every=log_every)
    if args.out:
        paths = save_result(result, args.out)
        log.info("wrote %s and %s", paths["png"], paths["json"])
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"{result.case_id}: SSIM mean {result.ssim_mean:.3f} max {result.ssim_max:.3f} "
              f"(secondary patch-matched {result.patch_ssim_mean:.3f}), 1-cos {result.grad_distance:.4f}, "
              f"{result.iterations} iterations x {result.restarts} restarts in {result.timings['attack_s']:.1f} s")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from giacheck.bench import run_bench

    result = run_bench(device=args.device, steps=args.steps, repeats=args.repeats)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return 0
    print(f"model {result.model} @32 bs1 eval, device {result.device}")
    print(f"  train step           {result.train_step_s * 1e3:8.1f} ms")
    print(f"  attack iteration     {result.attack_iter_s * 1e3:8.1f} ms")
    print(f"  bare autograd loop   {result.bare_iter_s * 1e3:8.1f} ms")
    print(f"  4 restarts, loop     {result.sequential4_iter_s * 1e3:8.1f} ms / iteration")
    print(f"  4 restarts, batched  {result.batched4_iter_s * 1e3:8.1f} ms / iteration")
    print(f"(a) attack / train    {result.attack_over_train:6.2f}   (target <= 3.0)")
    print(f"(b) giacheck / bare   {result.giacheck_over_bare:6.2f}   (target <= 1.10)")
    print(f"(c) batched speed-up  {result.batched_speedup:6.2f}   (target >= 1.3)")
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
    """Entry point of the ``giacheck`` console script; a :class:`GiacheckError` exits 2 with its message."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    commands = {"run": _cmd_run, "bench": _cmd_bench, "models": _cmd_models, "report": _cmd_report}
    try:
        return commands[args.command](args)
    except GiacheckError as exc:
        print(f"giacheck: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
