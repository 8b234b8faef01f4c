"""Tests of giacheck.specs: the case id round-trip (property), parse errors, AttackSpec validation, profiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.specs import (
    PROFILES,
    AttackSpec,
    BNMode,
    Case,
    ClientSpec,
    LabelKnowledge,
    ModelSpec,
    StatsAccess,
    ThreatSpec,
    UpdateKind,
    get_profile,
)

FAST = settings(max_examples=200, deadline=None)

_ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=16)
model_names = st.one_of(
    _ident,
    st.builds(lambda pkg, mod, fn: f"{pkg}.{mod}:{fn}", _ident, _ident, _ident),
)
# Values whose ``:g`` form (6 significant digits, no exponent for >= 1e-4) reads back as the same float.
init_ps = st.one_of(
    st.none(),
    st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.5, 0.75, 0.8, 0.9, 1.0, 0.05, 0.001, 0.0001, 0.123456]),
    st.integers(0, 1000).map(lambda k: k / 1000),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    update = draw(st.sampled_from(list(UpdateKind)))
    steps = draw(st.integers(1, 64)) if update is UpdateKind.FEDAVG else 1
    return Case(
        model=ModelSpec(name=draw(model_names), resolution=draw(st.integers(1, 4096))),
        client=ClientSpec(
            bn_mode=draw(st.sampled_from(list(BNMode))),
            batch_size=draw(st.integers(1, 512)),
            update=update,
            local_steps=steps,
        ),
        threat=ThreatSpec(
            stats=draw(st.sampled_from(list(StatsAccess))),
            labels=draw(st.sampled_from(list(LabelKnowledge))),
        ),
        init_p=draw(init_ps),
    )


# --- round trip -------------------------------------------------------------------------------------------


@FAST
@given(case=cases())
def test_parse_id_round_trips(case: Case) -> None:
    case_id = case.id
    parsed = Case.parse(case_id)
    assert parsed == case
    assert parsed.id == case_id
    assert str(case) == case_id


@FAST
@given(case=cases())
def test_id_is_prefixed_and_greppable(case: Case) -> None:
    case_id = case.id
    assert case_id.startswith(f"{case.model.name}-{case.model.resolution}-bn_{case.client.bn_mode}-")
    assert f"-bs{case.client.batch_size}-stats_{case.threat.stats}" in case_id
    assert ("-upd_fedavg" in case_id) == (case.client.update is UpdateKind.FEDAVG)
    assert ("-init_p" in case_id) == (case.init_p is not None)
    assert ("-lab_inferred" in case_id) == (case.threat.labels is LabelKnowledge.INFERRED)


def test_parse_reference_id() -> None:
    case = Case.parse("resnet18_cifar-32-bn_eval-bs1-stats_none")
    assert case.model == ModelSpec(name="resnet18_cifar", resolution=32)
    assert case.client.bn_mode is BNMode.EVAL
    assert case.client.batch_size == 1
    assert case.client.update is UpdateKind.FEDSGD
    assert case.client.local_steps == 1
    assert case.threat.stats is StatsAccess.NONE
    assert case.threat.labels is LabelKnowledge.KNOWN
    assert case.init_p is None
    assert case.init_p is None
    assert case.id == "resnet18_cifar-32-bn_eval-bs1-stats_none"


def test_parse_all_tails() -> None:
    case = Case.parse("swin_t-224-bn_train-bs4-stats_exact-upd_fedavg4-init_p0.5-lab_inferred")
    assert case.model == ModelSpec(name="swin_t", resolution=224)
    assert case.client.bn_mode is BNMode.TRAIN
    assert case.client.batch_size == 4
    assert case.client.update is UpdateKind.FEDAVG
    assert case.client.local_steps == 4
    assert case.threat == ThreatSpec(stats=StatsAccess.EXACT, labels=LabelKnowledge.INFERRED)
    assert case.init_p == 0.5
    assert case.init_p is not None


def test_parse_module_function_model_name() -> None:
    case = Case.parse("vendor.models:tiny_net-64-bn_eval-bs2-stats_proxy")
    assert case.model.name == "vendor.models:tiny_net"
    assert case.model.resolution == 64


@pytest.mark.parametrize(
    ("p", "text"), [(0.0, "init_p0"), (0.1, "init_p0.1"), (0.5, "init_p0.5"), (1.0, "init_p1"), (0.25, "init_p0.25")]
)
def test_init_p_formatting(p: float, text: str) -> None:
    case = Case(model=ModelSpec(name="m", resolution=32), init_p=p)
    assert case.id.endswith("-" + text)
    assert Case.parse(case.id).init_p == p


@pytest.mark.parametrize("p", [1e-5, 0.1234567])
def test_init_p_round_trips_for_any_fraction(p: float) -> None:
    case = Case(model=ModelSpec(name="m", resolution=32), init_p=p)
    assert Case.parse(case.id) == case


@pytest.mark.parametrize(
    ("given_id", "canonical"),
    [
        ("m-32-bn_eval-bs1-stats_none-upd_fedsgd", "m-32-bn_eval-bs1-stats_none"),
        ("m-32-bn_eval-bs1-stats_none-lab_known", "m-32-bn_eval-bs1-stats_none"),
        ("m-32-bn_eval-bs1-stats_none-upd_fedavg", "m-32-bn_eval-bs1-stats_none-upd_fedavg1"),
        ("  m-32-bn_eval-bs1-stats_none ", "m-32-bn_eval-bs1-stats_none"),
    ],
)
def test_parse_accepts_non_canonical_forms(given_id: str, canonical: str) -> None:
    assert Case.parse(given_id).id == canonical


def test_with_replaces_fields() -> None:
    case = Case.parse("m-32-bn_eval-bs1-stats_none")
    assert case.with_(init_p=0.5).id == "m-32-bn_eval-bs1-stats_none-init_p0.5"
    assert case.init_p is None  # frozen: the original is unchanged


# --- malformed ids ----------------------------------------------------------------------------------------

_FORM = r"expected MODEL-RES-bn_\{train\|eval\}-bsN-stats_"


@pytest.mark.parametrize(
    ("bad_id", "match"),
    [
        ("", _FORM),
        ("resnet18_cifar", _FORM),
        ("resnet18_cifar-32", _FORM),
        ("resnet18_cifar-32-bn_eval-bs1", _FORM),  # missing stats
        ("resnet18_cifar-bn_eval-bs1-stats_none", _FORM),  # missing resolution
        ("resnet18_cifar-32-bs1-stats_none", _FORM),  # missing bn
        ("resnet18_cifar-32-bn_eval-stats_none", _FORM),  # missing bs
        ("resnet18_cifar-32-bn_eval-bsX-stats_none", _FORM),
        ("resnet18_cifar-32-bn_eval-bs1-stats_none-upd_sgd", _FORM),
        ("resnet18_cifar-32-bn_eval-bs1-stats_none-init_pX", _FORM),
        ("resnet18_cifar-32-bn_sideways-bs1-stats_none", r"sideways.*valid: bn_train, bn_eval"),
        ("resnet18_cifar-32-bn_eval-bs1-stats_magic", r"magic.*valid: stats_none, stats_naive, stats_exact, stats_"),
        ("resnet18_cifar-32-bn_eval-bs1-stats_none-lab_psychic", r"psychic.*valid: lab_known, lab_inferred"),
        ("resnet18_cifar-32-bn_eval-bs1-stats_none-upd_fedsgd3", r"'upd_fedsgd' takes no step count"),
    ],
)
def test_parse_rejects_malformed(bad_id: str, match: str) -> None:
    with pytest.raises(InvalidCaseError, match=match) as info:
        Case.parse(bad_id)
    assert repr(bad_id) in str(info.value)  # the message quotes what was given
    assert isinstance(info.value, GiacheckError) and isinstance(info.value, ValueError)


def test_malformed_message_gives_an_example() -> None:
    with pytest.raises(InvalidCaseError, match=r"e\.g\. 'resnet18_cifar-32-bn_eval-bs1-stats_none'"):
        Case.parse("nonsense")


# --- AttackSpec -------------------------------------------------------------------------------------------


def test_attack_spec_defaults_are_valid() -> None:
    spec = AttackSpec()
    assert spec.iterations >= 1 and spec.lr > 0 and spec.bn_prior in ("raw", "relative")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iterations": 0}, r"iterations=0 \(valid: >= 1\)"),
        ({"iterations": -5}, r"iterations=-5"),
        ({"restarts": 0}, r"restarts=0 \(valid: >= 1\)"),
        ({"lr": 0.0}, r"lr=0.0 \(valid: > 0\)"),
        ({"lr": -0.1}, r"lr=-0.1"),
        ({"lr": float("nan")}, r"lr=nan"),
        ({"tv_weight": -1e-3}, r"tv_weight=-0.001"),
        ({"bn_weight": -1.0}, r"bn_weight=-1.0"),
        ({"bn_prior": "weird"}, r"bn_prior='weird' \(valid: 'raw', 'relative'\)"),
        ({"proxy_candidates": 0}, r"proxy_candidates=0"),
    ],
)
def test_attack_spec_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidCaseError, match=match):
        AttackSpec(**kwargs)


def test_attack_spec_lists_every_problem() -> None:
    with pytest.raises(InvalidCaseError) as info:
        AttackSpec(iterations=0, lr=0.0, bn_prior="weird")
    message = str(info.value)
    assert "iterations=0" in message and "lr=0.0" in message and "bn_prior='weird'" in message


def test_attack_spec_is_frozen() -> None:
    spec = AttackSpec()
    with pytest.raises(AttributeError):
        spec.iterations = 5  # type: ignore[misc]


# --- profiles ---------------------------------------------------------------------------------------------


def test_profiles() -> None:
    assert set(PROFILES) >= {"smoke", "paper"}
    assert get_profile("smoke") is PROFILES["smoke"]
    assert not get_profile("smoke").needs_gpu
    assert get_profile("paper").needs_gpu
    assert get_profile("paper").attack.iterations > get_profile("smoke").attack.iterations


def test_unknown_profile_lists_valid_names() -> None:
    with pytest.raises(InvalidCaseError, match=r"unknown profile 'nope'; valid: .*smoke.*paper"):
        get_profile("nope")


# ------------------------------------------------------------------------------------------ the grammar table
def test_every_axis_round_trips_and_defaults_are_omitted() -> None:
    from giacheck.specs import AXES, case_id

    full = case_id("lenet_sigmoid", 32, bn="eval", bs=2, stats="proxy", state="warm50", update="fedavg3", mb=1,
                   opt="nesterov0.9", wd=0.0005, lr=0.05, aug="cropflip", init=0.25, labels="inferred", hp="draws",
                   defences="clip1.5+identity", attack="pkg.mod:MyAttack")
    assert full == ("lenet_sigmoid-32-bn_eval-bs2-stats_proxy-state_warm50-upd_fedavg3-mb1-opt_nesterov0.9-wd0.0005"
                    "-lr0.05-aug_cropflip-init_p0.25-lab_inferred-hp_draws-def_clip1.5+identity-atk_pkg.mod:MyAttack")
    case = Case.parse(full)
    assert case.id == full and {a.key for a in AXES} == {"model", "res", "bn", "bs", "stats", "state", "update",
                                                         "mb", "opt", "wd", "lr", "aug", "init", "labels", "hp",
                                                         "defences", "attack"}
    assert (case.client.minibatch, case.client.optimizer, case.client.weight_decay, case.client.local_lr,
            case.client.augment, case.threat.hyper) == (1, "nesterov0.9", 0.0005, 0.05, "cropflip", "draws")
    assert case.client.defences == ("clip1.5", "identity") and case.attack == "pkg.mod:MyAttack"
    plain = case_id("lenet_sigmoid", 32, bn="eval", bs=1, stats="none", update="fedsgd", labels="known",
                    defences="", attack="gradmatch")
    assert plain == "lenet_sigmoid-32-bn_eval-bs1-stats_none"


def test_case_id_names_unknown_and_missing_axes() -> None:
    from giacheck.specs import case_id

    with pytest.raises(InvalidCaseError, match=r"unknown axis 'batch'.*valid: model, res, bn, bs"):
        case_id("m", 32, bn="eval", batch=1, stats="none")
    with pytest.raises(InvalidCaseError, match="give bs"):
        case_id("m", 32, bn="eval", stats="none")


def test_malformed_defence_token_is_refused() -> None:
    with pytest.raises(InvalidCaseError, match="cannot read"):
        Case.parse("m-32-bn_eval-bs1-stats_none-def_clip1.5.5")
