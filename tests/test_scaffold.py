"""Tests of giacheck.scaffold: the generated pack module rebuilds the pack field by field (every field of ``Pack``
and ``Grid`` set off its default, so a new field must be added here), and a value it cannot write is refused
with a clear error before anything is written."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from giacheck.attack.registry import ATTACKS
from giacheck.errors import GiacheckError
from giacheck.models import registry
from giacheck.pack import Grid, Pack, Rule
from giacheck.scaffold import PACK_MODULE, pack_module_source, scaffold_pack
from giacheck.specs import AttackSpec, BNMode, LabelKnowledge, StatsAccess

# A vendor module: a model factory given to the pack as a callable (a plain module), and an attack (never run).
SCAFFOLDMOD = '''
from torch import nn


def model(input_size, num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * input_size * input_size, num_classes))


class ProbeAttack:
    def __init__(self, spec):
        self.spec = spec
'''


@pytest.fixture(autouse=True)
def forget_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model aliases a pack registers are forgotten after each test."""
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


@pytest.fixture
def scaffoldmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``scaffoldmod`` importable with its attack registered as ``scaffold_probe``; all forgotten afterwards."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "scaffoldmod.py").write_text(SCAFFOLDMOD)
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, "scaffoldmod", raising=False)
    ATTACKS.names()  # built-ins registered before the copy
    monkeypatch.setattr(ATTACKS, "_items", dict(ATTACKS._items))
    module = importlib.import_module("scaffoldmod")
    ATTACKS.register("scaffold_probe")(module.ProbeAttack)
    yield module


def _image_folder(root: Path) -> Path:
    for label, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 20), tuple(c + 10 * i for c in colour)).save(root / label / f"{i}.png")
    return root


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"scaffolded_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def _checkpoint(path: Path, model, *, input_size: int, num_classes: int) -> Path:
    """The state dict of ``model``'s network at random initialization, saved as safetensors."""
    from safetensors.torch import save_file

    Pack(name="acme_ckpt_source", model=model, input_size=input_size, num_classes=num_classes).register()
    net = registry.build("acme_ckpt_source", input_size).net
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_every_field_round_trips(tmp_path: Path, scaffoldmod: ModuleType) -> None:
    """Every field of Pack and Grid off its default: the scaffolded module's PACK equals the pack, field by field."""
    grid = Grid(batch_sizes=(1, 2), bn=(BNMode.TRAIN, BNMode.EVAL), stats=(StatsAccess.NONE, StatsAccess.NAIVE),
                updates=("fedavg1", "fedavg2"), labels=(LabelKnowledge.KNOWN, LabelKnowledge.INFERRED),
                defences=("", "clip1.5"), states=("ckpt",), minibatches=(1,), optimizers=("momentum0.9",),
                weight_decays=(0.0005,), lrs=(0.1,), augments=("flip",), hyper=("draws",))
    weights = _checkpoint(tmp_path / "acme.safetensors", scaffoldmod.model, input_size=16, num_classes=10)
    pack = Pack(name="acme_everything", weights=weights, model=scaffoldmod.model, grid=grid,
                rules=(Rule("no configuration leaks an identifiable image"),
                       Rule("bs >= 2 is infeasible", max_ssim=0.1, where="bs>=2,bn=train")),
                input_size=16, num_classes=10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4),
                control="lenet_sigmoid-32-bn_eval-bs1-stats_none",
                baselines=tmp_path / "shared" / "baselines", data=f"imagefolder:{_image_folder(tmp_path / 'imgs')}",
                seed=7, attack=AttackSpec(iterations=5, tv_weight=0.5, distance="l2"), attacker="scaffold_probe")
    for cls, obj in ((Pack, pack), (Grid, grid)):  # client needs a grid without simulated defences: see below
        same = [name for name, default in _defaults(cls).items()
                if getattr(obj, name) == default and (cls, name) != (Pack, "client")]
        assert not same, f"set {cls.__name__} field(s) {same} off their default in this test"

    written = scaffold_pack(tmp_path / "pack", pack)
    assert written["baselines"] == tmp_path / "shared" / "baselines" and written["baselines"].is_dir()
    text = written["module"].read_text()
    compile(text, PACK_MODULE, "exec")
    assert "from scaffoldmod import model" in text and "Path(__file__).parent / '../shared/baselines'" in text
    loaded = _import(written["module"]).PACK
    for f in dataclasses.fields(Pack):
        want, got = getattr(pack, f.name), getattr(loaded, f.name)
        if isinstance(want, Path):
            want, got = want.resolve(), Path(got).resolve()
        assert got == want, f.name
    assert loaded.case_ids() == pack.case_ids()


def test_defaults_stay_out_and_the_edited_fields_stay_in(tmp_path: Path) -> None:
    pack = Pack(name="acme_small", model="resnet18_cifar")
    text = scaffold_pack(tmp_path / "pack", pack)["module"].read_text()
    assert "input_size=32," in text and "num_classes=10," in text, "pinned to what the entry resolved"
    assert "grid=Grid(" in text and "labels=(LabelKnowledge.KNOWN,)" in text, "every axis shown, to edit"
    assert "baselines=Path(__file__).parent / 'baselines'," in text and "rules=()," in text
    for field in ("mean", "std", "control", "data", "seed", "attack", "attacker"):
        assert f"    {field}=" not in text, field
    assert (tmp_path / "pack" / "baselines" / ".gitkeep").is_file()


def test_a_value_it_cannot_write_is_refused_before_writing(tmp_path: Path) -> None:
    entry = registry.get_entry("lenet_sigmoid")
    pack = Pack(name="acme_lambda", model=lambda: entry, input_size=32, grid=Grid(bn="eval"))
    with pytest.raises(GiacheckError, match=r"cannot write Pack\.model=<function .*<lambda>.* only objects defined "
                                            "at the top level of an importable module"):
        scaffold_pack(tmp_path / "pack", pack)
    assert not (tmp_path / "pack").exists()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WiderPack(Pack):
    """A Pack with one more field, as another engineer may add: the generator must write it or refuse it."""

    extra: object = None


@dataclasses.dataclass(frozen=True)
class Counter:
    """A value whose constructor does not rebuild it (``seen`` is not an init field)."""

    start: int = 0
    seen: int = dataclasses.field(default=0, init=False)


def test_a_new_field_is_written_or_refused_never_dropped(tmp_path: Path) -> None:
    module = tmp_path / PACK_MODULE
    base = {"name": "acme_wider", "model": "lenet_sigmoid", "input_size": 32, "num_classes": 10,
            "baselines": tmp_path / "baselines"}
    text = pack_module_source(WiderPack(**base, extra=(1, "two", BNMode.EVAL)), module)
    assert "extra=(1, 'two', BNMode.EVAL)," in text and "PACK = WiderPack(" in text
    with pytest.raises(GiacheckError, match=r"cannot write WiderPack\.extra=<object object .*> \(object\)"):
        pack_module_source(WiderPack(**base, extra=object()), module)
    counted = Counter(start=1)
    object.__setattr__(counted, "seen", 5)
    with pytest.raises(GiacheckError, match=r"WiderPack\.extra=Counter\(start=1, seen=5\) would read back .* as "
                                            r"Counter\(start=1, seen=0\)"):
        pack_module_source(WiderPack(**base, extra=counted), module)


def test_init_pack_takes_the_deployment_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``init-pack`` writes a grid over defences and local training from its flags; a bad value is refused
    naming the flag, before anything is written."""
    from giacheck.cli import main

    assert main(["init-pack", str(tmp_path / "pack"), "--model", "resnet18_cifar", "--bn", "eval",
                 "--defences", "none,dpsgd1,clip1+noise0.01", "--updates", "fedavg2", "--minibatches", "1",
                 "--optimizers", "momentum0.9", "--weight-decays", "0.0005", "--lrs", "0.1", "--augments", "flip",
                 "--hyper", "draws"]) == 0
    source = (tmp_path / "pack" / PACK_MODULE).read_text()
    for written in ("defences=('', 'dpsgd1', 'clip1+noise0.01')", "minibatches=(1,)", "optimizers=('momentum0.9',)",
                    "weight_decays=(0.0005,)", "lrs=(0.1,)", "augments=(Augment.FLIP,)",
                    "hyper=(HyperKnowledge.DRAWS,)"):
        assert written in source
    assert "-upd_fedavg2-opt_momentum0.9-wd0.0005-lr0.1-aug_flip-hp_draws-def_dpsgd1" in \
        (tmp_path / "pack" / "README.md").read_text()
    capsys.readouterr()
    assert main(["init-pack", str(tmp_path / "bad"), "--model", "resnet18_cifar", "--lrs", "0.1,fast"]) == 2
    assert "--lrs '0.1,fast': give comma-separated numbers" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_framework_client_round_trips(tmp_path: Path) -> None:
    from giacheck.fl import FlowerClient

    client = FlowerClient("giacheck.fl.example_apps:clip_app", config={"clipping_norm": 0.5}, delta=True)
    pack = Pack(name="acme_flower", model="giacheck.models.lenet:lenet_sigmoid", input_size=16, num_classes=10,
                grid=Grid(bn=("eval",), updates=("fedavg1",)), client=client)
    written = scaffold_pack(tmp_path / "pack", pack)
    text = written["module"].read_text()
    assert "from giacheck.fl.flower import FlowerClient" in text
    assert _import(written["module"]).PACK.client == client
