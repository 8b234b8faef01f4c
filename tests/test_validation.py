"""Tests of giacheck.validation: every nonsensical case is rejected before compute, saying what was given and
what is valid; a valid case gives no problems."""

from __future__ import annotations

import dataclasses

import pytest

from giacheck.data import BundledImages
from giacheck.errors import GiacheckError, InvalidCaseError, UnknownModelError
from giacheck.models import get_entry
from giacheck.specs import Case, ClientSpec, ModelSpec
from giacheck.validation import check_case, validate


def _problems(case_id: str, **kwargs: object) -> list[str]:
    return validate(Case.parse(case_id), **kwargs)


@pytest.mark.parametrize("case_id", [
    "lenet_sigmoid-32-bn_eval-bs1-stats_none",
    "lenet_sigmoid-32-bn_eval-bs4-stats_none-init_p0.5-lab_inferred",
    "resnet18_cifar-32-bn_train-bs1-stats_exact",
    "resnet18_cifar-32-bn_train-bs2-stats_exact-upd_fedavg1",
    "resnet18_cifar-32-bn_eval-bs1-stats_naive",
    "resnet18_cifar-32-bn_train-bs4-stats_proxy-upd_fedavg3",
    "resnet18_preact_cifar-32-bn_train-bs1-stats_none-init_p0",
    "resnet18_preact_cifar-32-bn_eval-bs1-stats_none-init_p1",
])
def test_valid_cases_have_no_problems(case_id: str) -> None:
    assert _problems(case_id) == []
    assert _problems(case_id, source=BundledImages(10)) == []
    check_case(Case.parse(case_id))  # does not raise


@pytest.mark.parametrize(("case_id", "given", "valid"), [
    ("lenet_sigmoid-32-bn_train-bs1-stats_none", ["bn_train", "lenet_sigmoid", "no BatchNorm"], ["bn_eval"]),
    ("resnet18_cifar-32-bn_eval-bs1-stats_exact", ["stats_exact", "bn_eval"], ["bn_train", "stats_naive"]),
    ("lenet_sigmoid-32-bn_eval-bs1-stats_exact", ["stats_exact", "lenet_sigmoid", "no BatchNorm"], ["stats_none"]),
    ("lenet_sigmoid-32-bn_eval-bs1-stats_naive", ["stats_naive", "lenet_sigmoid"], ["stats_none"]),
    ("resnet18_cifar-32-bn_train-bs1-stats_exact-upd_fedavg3", ["stats_exact", "3 local epoch"],
     ["upd_fedavg1", "FedSGD", "stats_naive"]),
    ("lenet_sigmoid-32-bn_eval-bs1-stats_proxy", ["stats_proxy", "lenet_sigmoid"], ["stats_none"]),
    ("lenet_sigmoid-32-bn_eval-bs1-stats_none-init_p1.5", ["init_p1.5"], ["[0, 1]"]),
    ("lenet_sigmoid-30-bn_eval-bs1-stats_none", ["lenet_sigmoid", "30"], ["multiple of 4"]),
    ("lenet_sigmoid-4-bn_eval-bs1-stats_none", ["lenet_sigmoid", "got 4"], [">= 8"]),
    ("lenet_sigmoid-32-bn_eval-bs11-stats_none", ["batch size 11", "10 classes"], ["1..10"]),
])
def test_one_problem_naming_given_and_valid(case_id: str, given: list[str], valid: list[str]) -> None:
    problems = _problems(case_id)
    assert len(problems) == 1, problems
    for text in given + valid:
        assert text in problems[0], f"{text!r} not in {problems[0]!r}"


def test_batch_larger_than_the_source() -> None:
    source = BundledImages(10)
    assert len(source) == 12
    entry = dataclasses.replace(get_entry("lenet_sigmoid"), num_classes=100)  # isolate the source check
    problems = _problems("lenet_sigmoid-32-bn_eval-bs13-stats_none", entry=entry, source=source)
    assert problems == [
        "batch size 13 is larger than the 12 images available in bundled (valid: 1..12)"
    ]
    assert _problems("lenet_sigmoid-32-bn_eval-bs12-stats_none", entry=entry, source=source) == []


def test_batch_larger_than_source_and_classes_reports_both() -> None:
    problems = _problems("lenet_sigmoid-32-bn_eval-bs13-stats_none", source=BundledImages(10))
    assert len(problems) == 2
    assert any("13 is larger than the 12 images" in p and "1..12" in p for p in problems)
    assert any("only 10 classes" in p and "1..10" in p for p in problems)


def test_source_check_skipped_without_source() -> None:
    entry = dataclasses.replace(get_entry("lenet_sigmoid"), num_classes=100)
    assert _problems("lenet_sigmoid-32-bn_eval-bs13-stats_none", entry=entry) == []


def test_problems_from_specs_the_id_cannot_express() -> None:
    case = Case(model=ModelSpec(name="lenet_sigmoid", resolution=32),
                client=ClientSpec(bn_mode="eval", batch_size=0, local_lr=0.0))
    problems = validate(case)
    assert any("batch size 0" in p and ">= 1" in p for p in problems)
    assert any("local_lr=0.0" in p and "> 0" in p for p in problems)
    assert any("init_p-0.5" in p for p in validate(case.with_(client=ClientSpec(bn_mode="eval"), init_p=-0.5)))


def test_fedavg_zero_steps() -> None:
    case = Case.parse("resnet18_cifar-32-bn_train-bs1-stats_none-upd_fedavg1")
    case = case.with_(client=dataclasses.replace(case.client, local_steps=0))
    problems = validate(case)
    assert any("upd_fedavg0" in p and "at least one local step" in p for p in problems)


def test_several_problems_are_all_reported() -> None:
    problems = _problems("lenet_sigmoid-30-bn_train-bs1-stats_exact-init_p1.5")
    assert len(problems) == 4, problems


def test_check_case_raises_listing_every_problem() -> None:
    case = Case.parse("lenet_sigmoid-30-bn_train-bs1-stats_proxy-init_p1.5")
    problems = validate(case)
    assert len(problems) == 4
    with pytest.raises(InvalidCaseError) as info:
        check_case(case)
    assert isinstance(info.value, GiacheckError)
    message = str(info.value)
    assert case.id in message
    for problem in problems:
        assert problem in message


def test_unknown_model_raises_at_once() -> None:
    with pytest.raises(UnknownModelError, match="resnet18_cifar"):
        validate(Case.parse("resnet18_cifr-32-bn_eval-bs1-stats_none"))


def test_lab_inferred_on_a_non_classification_model() -> None:
    entry = dataclasses.replace(get_entry("lenet_sigmoid"), task="detection")
    problems = _problems("lenet_sigmoid-32-bn_eval-bs1-stats_none-lab_inferred", entry=entry)
    assert len(problems) == 1 and "lab_inferred" in problems[0] and "detection" in problems[0]
