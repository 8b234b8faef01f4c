"""``giacheck init-pack``: scaffold a privacy test pack (test module, baselines folder, README) for a model.

The pack is validated (the model imports and builds its entry, every configuration of the grid is valid)
before anything is written, and nothing is written into a folder that already holds files.

The module's ``PACK = Pack(...)`` is generated from the fields of :class:`~giacheck.pack.Pack` (and of every
dataclass inside it: ``Grid``, ``Rule``, ``AttackSpec``, ...), not from a list of names, so a field added to them
cannot be dropped silently. Written are the fields without a default, the ones a vendor edits (the grid with all
its axes, the rules, the input size and classes, pinned to what the entry resolved, and the baselines folder) and
every other field that differs from its default. A value is written as a literal, an enum member, a dataclass call,
a path relative to the module, or an import of a module-level object (a model factory given as a callable); a
value of any other kind is a :class:`~giacheck.errors.GiacheckError`. The generated ``PACK`` is then rebuilt and
compared with the pack field by field before anything is written.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import logging
import math
import os
from pathlib import Path, PurePath
from typing import Any

from giacheck.errors import GiacheckError
from giacheck.pack import Pack

__all__ = ["PACK_MODULE", "scaffold_pack"]

log = logging.getLogger("giacheck.scaffold")

PACK_MODULE = "test_privacy_pack.py"

#: Pack fields written even at their default: what a vendor edits, and what the entry resolved.
_ALWAYS_WRITTEN = frozenset({"grid", "rules", "input_size", "num_classes", "baselines"})
#: Dataclasses written with every field, so that each axis is visible to edit.
_ALL_FIELDS_OF = frozenset({"Grid"})
#: Names the module defines or imports itself.
_RESERVED = frozenset({"Path", "pytest", "PACK", "test_attack_reconstructs_the_control", "test_configuration"})

_MODULE = '''"""Privacy test pack for {model}: does a client update leak its images through gradient inversion?

Scaffolded by `giacheck init-pack`. Edit the grid (deployment settings) and the rules (what must hold), then
record the baselines and commit them:

    pytest {folder} -n 2 --giacheck-update-all     # record (review the diff of baselines/)
    pytest {folder} -n 2                           # rerun whenever the model changes: fails when leakage rises
"""

{imports}

PACK = {pack}


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

    The baselines folder is ``pack.baselines`` when set (created if missing), else ``folder/baselines``.

    Raises:
        GiacheckError: ``folder`` exists and is not an empty folder (nothing is written), the pack is invalid
            (the model does not import, its factory raises, a configuration is invalid), or a field of the pack
            cannot be written into the module.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        names = sorted(p.name for p in folder.iterdir())[:5] if folder.is_dir() else []
        held = f"holds {', '.join(names)}" if names else "is a file"
        raise GiacheckError(f"init-pack {folder}: the path {held}; nothing was written. Give a new or empty folder.")
    plan = pack.plan()  # the model imports, the grid is valid: before anything is written
    baselines = Path(pack.baselines) if pack.baselines is not None else folder / "baselines"
    pinned = dataclasses.replace(pack, input_size=pack.resolution, num_classes=pack.entry().num_classes,
                                 baselines=baselines)
    module_text = pack_module_source(pinned, folder / PACK_MODULE, shown=_shown(folder))
    values = {
        "name": pack.name, "model": _model_label(pack.model), "input_size": pinned.input_size,
        "folder": _shown(folder), "module": PACK_MODULE, "control": pack.control_id,
        "cases": ", ".join(f"`{c.id}`" for c in plan.cases),
        "not_applicable": "".join(f"\nNot applicable: `{cid}` ({why}).\n" for cid, why in plan.not_applicable),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = {
        "module": _write(folder / PACK_MODULE, module_text),
        "readme": _write(folder / "README.md", _README.format(**values)),
        "baselines": baselines,
    }
    if not baselines.exists():
        baselines.mkdir(parents=True)
        _write(baselines / ".gitkeep", "")
    log.info("scaffolded pack %s in %s (%d configurations)", pack.name, folder, len(plan.cases))
    return written


def pack_module_source(pack: Pack, module_path: Path, *, shown: str = ".") -> str:
    """The text of a pack module for ``pack`` at ``module_path``, checked to rebuild ``pack`` field by field.

    Raises:
        GiacheckError: a field holds a value that cannot be written, or the written module rebuilds another pack.
    """
    source = _Source(module_path.parent)
    cls = type(pack)
    lines = []
    for f in dataclasses.fields(pack):
        value, where = getattr(pack, f.name), f"{cls.__name__}.{f.name}"
        if f.name not in _ALWAYS_WRITTEN and _has_default(f) and _is_default(f, value):
            continue
        text = source.value(value, where)
        if len(text) > 100 and isinstance(value, tuple):  # one item per line (the rules)
            items = (source.value(v, f"{where}[{i}]") for i, v in enumerate(value))
            text = "(\n" + "".join(f"        {item},\n" for item in items) + "    )"
        elif len(text) > 100 and dataclasses.is_dataclass(value):  # one field per line (the grid)
            text = source.dataclass_call(value, where, indent=" " * 8)
        lines.append(f"    {f.name}={text},\n")
    expression = f"{source.name_of(cls, cls.__name__)}(\n{''.join(lines)})"
    imports = source.import_lines()
    _check_round_trip(pack, imports, expression, module_path)
    return _MODULE.format(model=_model_label(pack.model), folder=shown, imports=imports, pack=expression)


class _Source:
    """Python source for values of a pack, collecting the imports it needs; the module lives in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.imports: dict[str, tuple[str, str]] = {"Path": ("pathlib", "Path")}  # local name -> (module, name)

    def value(self, value: Any, where: str) -> str:
        if isinstance(value, enum.Enum):  # before str and int: StrEnum and IntEnum members are those too
            return f"{self.name_of(type(value), where)}.{value.name}"
        if value is None or isinstance(value, bool | int | str):
            return repr(value)
        if isinstance(value, float):
            return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
        if isinstance(value, PurePath):
            return self._path(Path(value))
        if isinstance(value, tuple | list):
            items = ", ".join(self.value(v, f"{where}[{i}]") for i, v in enumerate(value))
            return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{self.value(k, where)}: {self.value(v, f'{where}[{k!r}]')}"
                                   for k, v in value.items()) + "}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.dataclass_call(value, where)
        if callable(value):
            return self.name_of(value, where)
        raise _unwritable(where, value, "it is not a literal, an enum member, a path, a dataclass or an importable "
                                        "module-level object")

    def dataclass_call(self, value: Any, where: str, *, indent: str = "") -> str:
        """``Cls(positional, key=value)``: fields without a default and those off their default (all for a Grid);
        with ``indent``, one argument per line."""
        cls = type(value)
        parts, positional = [], True
        for f in dataclasses.fields(value):
            if not f.init:
                continue
            current = getattr(value, f.name)
            if cls.__name__ not in _ALL_FIELDS_OF and _has_default(f) and _is_default(f, current):
                positional = False  # a later positional field would land in this one's place
                continue
            text = self.value(current, f"{where}.{f.name}")
            positional = positional and not f.kw_only
            parts.append(text if positional else f"{f.name}={text}")
        if indent:
            return f"{self.name_of(cls, where)}(\n" + "".join(f"{indent}{p},\n" for p in parts) + f"{indent[:-4]})"
        return f"{self.name_of(cls, where)}({', '.join(parts)})"

    def _path(self, path: Path) -> str:
        """A path relative to the module's folder (``Path(__file__).parent / ...``), so the pack can move."""
        target = os.path.abspath(path)
        try:
            relative = Path(os.path.relpath(target, os.path.abspath(self.folder))).as_posix()
        except ValueError:  # another drive on Windows
            return f"Path({target!r})"
        return "Path(__file__).parent" + ("" if relative == "." else f" / {relative!r}")

    def name_of(self, obj: Any, where: str) -> str:
        """The local name of a module-level object, imported in the module (aliased on a clash)."""
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not module or not qualname or module == "__main__" or "<" in qualname:
            raise _unwritable(where, obj, "only objects defined at the top level of an importable module can be "
                                          "imported by the pack module")
        try:
            found = functools.reduce(getattr, qualname.split("."), importlib.import_module(module))
        except (ImportError, AttributeError):
            found = None
        if found is not obj:
            raise _unwritable(where, obj, f"{module}.{qualname} does not import as this object")
        top = qualname.split(".")[0]
        local, n = top, 2
        while (local in _RESERVED and local != "Path") or self.imports.get(local, (module, top)) != (module, top):
            local, n = f"{top}_{n}", n + 1
        self.imports[local] = (module, top)
        return local + qualname[len(top):]

    def import_lines(self) -> str:
        """``from pathlib import Path``, ``import pytest``, then one ``from M import ...`` line per module, sorted."""
        by_module: dict[str, list[str]] = {}
        for local, (module, name) in sorted(self.imports.items()):
            if module != "pathlib":
                by_module.setdefault(module, []).append(name if local == name else f"{name} as {local}")
        lines = [f"from {module} import {', '.join(names)}" for module, names in sorted(by_module.items())]
        return "from pathlib import Path\n\nimport pytest\n\n" + "\n".join(lines)


def _check_round_trip(pack: Pack, imports: str, expression: str, module_path: Path) -> None:
    """Rebuild the pack from the generated source and compare it with ``pack`` field by field (paths resolved)."""
    namespace: dict[str, Any] = {"__file__": str(module_path), "__name__": "giacheck_scaffold_check"}
    try:
        exec(compile(f"{imports}\nPACK = {expression}", str(module_path), "exec"), namespace)
    except Exception as exc:
        raise GiacheckError(f"init-pack: the generated {PACK_MODULE} does not rebuild pack {pack.name!r} "
                            f"({type(exc).__name__}: {exc}); nothing was written") from exc
    rebuilt = namespace["PACK"]
    for f in dataclasses.fields(pack):
        want, got = getattr(pack, f.name), getattr(rebuilt, f.name)
        if isinstance(want, PurePath) and isinstance(got, PurePath):
            want, got = Path(want).resolve(), Path(got).resolve()
        if want != got:
            raise GiacheckError(f"init-pack: {type(pack).__name__}.{f.name}={want!r} would read back from "
                                f"{PACK_MODULE} as {got!r}; nothing was written")


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _is_default(f: dataclasses.Field, value: Any) -> bool:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    try:
        return bool(value == default)
    except Exception:  # a value without a plain equality (an array): write it
        return False


def _unwritable(where: str, value: Any, why: str) -> GiacheckError:
    return GiacheckError(f"init-pack: cannot write {where}={value!r} ({type(value).__name__}) into {PACK_MODULE}: "
                         f"{why}; nothing was written")


def _model_label(model: Any) -> str:
    """``package.module:function`` for a factory given as a callable."""
    if isinstance(model, str):
        return model
    return f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', model)}"


def _write(path: Path, text: str) -> Path:
    with open(path, "x", encoding="utf-8") as fh:  # "x": never replace a file
        fh.write(text)
    return path


def _shown(folder: Path) -> str:
    try:
        return os.path.relpath(folder)
    except ValueError:  # another drive on Windows
        return str(folder)
