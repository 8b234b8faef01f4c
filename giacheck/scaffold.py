"""``giacheck init-pack``: scaffold a privacy test pack (test module, baselines folder, README) for a model.

The pack is validated (the model imports and builds its entry, every configuration of the grid is valid)
before anything is written, and nothing is written into a folder that already holds files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from giacheck.errors import GiacheckError
from giacheck.pack import Pack, Rule

__all__ = ["PACK_MODULE", "scaffold_pack"]

log = logging.getLogger("giacheck.scaffold")

PACK_MODULE = "test_privacy_pack.py"

_MODULE = '''"""Privacy test pack for {model}: does a client update leak its images through gradient inversion?

Scaffolded by `giacheck init-pack`. Edit the grid (deployment settings) and the rules (what must hold), then
record the baselines and commit them:

    pytest {folder} -n 2 --giacheck-update-all     # record (review the diff of baselines/)
    pytest {folder} -n 2                           # rerun whenever the model changes: fails when leakage rises
"""

from pathlib import Path

import pytest

from giacheck.pack import Grid, Pack, Rule

PACK = Pack(
    name={name!r},
    model={model!r},
    input_size={input_size!r},
    num_classes={num_classes!r},
    grid=Grid(batch_sizes={batch_sizes!r}, bn={bn!r}, stats={stats!r}, updates={updates!r}),
    rules=(
{rules}
    ),
{extra}    baselines=Path(__file__).parent / "baselines",
)


def test_attack_reconstructs_the_control(gia):
    """The positive control: the rules below are conclusive only when the attack reconstructs this case under
    the same budget (otherwise they fail as inconclusive)."""
    gia.pack_control(PACK)


@pytest.mark.parametrize("case_id", PACK.case_ids())
def test_configuration(gia, case_id):
    """One deployment setting: the rules that apply to it, and its recorded baseline."""
    gia.pack_case(PACK, case_id)
'''

_README = '''# Privacy test pack: `{name}`

Gradient-inversion leakage tests for `{model}`, made with [giacheck](https://pypi.org/project/giacheck/).
Each configuration of the grid in `{module}` simulates one federated client update at {input_size}×{input_size},
attacks it and scores the reconstruction with SSIM; it must satisfy the pack's rules and may not leak more
than its recorded baseline (`baselines/<profile>/{name}/<case-id>.json`).

```bash
pytest {folder} -n 2 --giacheck-update-all   # first run: record the baselines, then commit baselines/
pytest {folder} -n 2                         # in CI, whenever the model changes
pytest {folder} --giacheck-update            # after an intended change: rewrite, fail, review the diff, rerun
```

The positive control (`{control}`) shows that the attack reconstructs under the same budget; without it a
"the attack fails" result would prove nothing. Configurations: {cases}.
{not_applicable}'''


def scaffold_pack(folder: Path | str, pack: Pack) -> dict[str, Path]:
    """Write ``test_privacy_pack.py``, ``baselines/`` and ``README.md`` for ``pack`` into ``folder``.

    Raises:
        GiacheckError: ``folder`` exists and is not an empty folder (nothing is written), or the pack is
            invalid (the model does not import, its factory raises, a configuration is invalid).
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        names = sorted(p.name for p in folder.iterdir())[:5] if folder.is_dir() else []
        held = f"holds {', '.join(names)}" if names else "is a file"
        raise GiacheckError(f"init-pack {folder}: the path {held}; nothing was written. Give a new or empty folder.")
    plan = pack.plan()  # the model imports, the grid is valid: before anything is written
    entry = pack.entry()
    values = {
        "name": pack.name, "model": pack.model, "input_size": pack.resolution, "num_classes": entry.num_classes,
        "batch_sizes": pack.grid.batch_sizes, "bn": tuple(map(str, pack.grid.bn)),
        "stats": tuple(map(str, pack.grid.stats)), "updates": pack.grid.updates,
        "rules": "\n".join(f"        {_rule_source(rule)}," for rule in pack.rules),
        "extra": "".join(f"    {key}={value!r},\n" for key, value in _non_defaults(pack)),
        "folder": _shown(folder), "module": PACK_MODULE, "control": pack.control_id,
        "cases": ", ".join(f"`{c.id}`" for c in plan.cases),
        "not_applicable": "".join(f"\nNot applicable: `{cid}` ({why}).\n" for cid, why in plan.not_applicable),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = {
        "module": _write(folder / PACK_MODULE, _MODULE.format(**values)),
        "readme": _write(folder / "README.md", _README.format(**values)),
        "baselines": folder / "baselines",
    }
    written["baselines"].mkdir()
    _write(written["baselines"] / ".gitkeep", "")
    log.info("scaffolded pack %s in %s (%d configurations)", pack.name, folder, len(plan.cases))
    return written


def _rule_source(rule: Rule) -> str:
    where = f", where={rule.where!r}" if rule.where else ""
    return f"Rule({rule.text!r}, max_ssim={rule.max_ssim!r}{where})"


def _non_defaults(pack: Pack) -> list[tuple[str, object]]:
    """The pack's control, data and seed where they differ from the defaults (the module shows only those)."""
    defaults = {f.name: f.default for f in dataclasses.fields(Pack) if f.name in ("control", "data", "seed")}
    return [(name, getattr(pack, name)) for name, default in defaults.items() if getattr(pack, name) != default]


def _write(path: Path, text: str) -> Path:
    with open(path, "x", encoding="utf-8") as fh:  # "x": never replace a file
        fh.write(text)
    return path


def _shown(folder: Path) -> str:
    try:
        return os.path.relpath(folder)
    except ValueError:  # another drive on Windows
        return str(folder)
