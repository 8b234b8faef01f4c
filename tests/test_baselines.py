"""Tests of giacheck.baselines: the check a test runs against its recorded baseline — missing, corrupt (left
untouched, even by an update), updated, stale (recorded under another attack identity: each changed field
named, the file untouched), and the one-sided / two-sided SSIM comparison; a tolerance that would disable
every check is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from giacheck import records
from giacheck.baselines import BaselineStore, check_baseline
from giacheck.claims import InvalidToleranceError
from giacheck.errors import BaselineError
from giacheck.records import BaselineStatus, IdentityChange

SUITE = "test_table1"
CASE = "resnet18_cifar-32-bn_eval-bs1-stats_none"


def result(ssim: float = 0.5, *, profile: str = "smoke", **attack: Any) -> dict[str, Any]:
    return {"case_id": CASE, "profile": profile, "ssim": {"per_image": [ssim], "mean": ssim, "max": ssim},
            "attack": {"name": "gradmatch", "iterations": 200, "restarts": 1, "lr": 0.1, "tv_weight": 0.01,
                       "bn_weight": 0.01, "bn_prior": "relative", "proxy_candidates": 4, "distance": "cosine",
                       "batched": True, **attack}}


@pytest.fixture
def store(tmp_path: Path) -> BaselineStore:
    return BaselineStore(tmp_path / "baselines", "smoke")


def _check(store: BaselineStore, res: dict[str, Any], **kwargs: Any) -> records.BaselineCheck:
    return check_baseline(store, SUITE, res, **{"tolerance": 0.05, "positive": False, **kwargs})


def test_missing_then_recorded_then_pass_and_fail(store: BaselineStore) -> None:
    check = _check(store, result())
    assert check.status is BaselineStatus.MISSING and not check.passed and check.recorded is None
    assert f"no baseline recorded at {store.path(SUITE, CASE)}" in check.message
    assert "--giacheck-update" in check.message
    path = store.write(SUITE, CASE, result(0.5))
    assert json.loads(path.read_text())["profile"] == "smoke", "a baseline records the profile it belongs to"
    assert _check(store, result(0.54)).status is BaselineStatus.PASS
    rose = _check(store, result(0.56))
    assert rose.status is BaselineStatus.FAIL and not rose.passed and rose.recorded == 0.5
    assert "LEAKAGE ROSE" in rose.message and rose.path == str(path)
    assert _check(store, result(0.40)).passed, "one-sided for leakage"
    weaker = _check(store, result(0.40), positive=True)
    assert weaker.status is BaselineStatus.FAIL and "GOT WEAKER" in weaker.message


def test_nan_ssim_fails(store: BaselineStore) -> None:
    store.write(SUITE, CASE, result(0.5))
    check = _check(store, result(math.nan))
    assert check.status is BaselineStatus.FAIL and "not a number" in check.message


def test_stale_baseline_names_each_change_and_is_left_untouched(store: BaselineStore) -> None:
    path = store.write(SUITE, CASE, result(0.5, iterations=400, distance="l2"))
    before = path.read_bytes()
    check = _check(store, result(0.5))  # same SSIM: a stale baseline fails whatever the numbers
    assert check.status is BaselineStatus.STALE and not check.passed and check.recorded == 0.5
    assert check.changed == (IdentityChange(field="iterations", recorded=400, current=200),
                             IdentityChange(field="distance", recorded="l2", current="cosine"))
    assert check.message == (f"stale baseline {path}: recorded under iterations=400, this run iterations=200; "
                             "recorded under distance=l2, this run distance=cosine; rerun with --giacheck-update to "
                             "re-record (the file was left untouched; its SSIM was not compared)")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file either"


def test_files_from_before_the_attack_had_a_name_are_not_stale(store: BaselineStore) -> None:
    old = result(0.5)
    del old["attack"]["name"], old["attack"]["distance"]  # recorded by the built-in attack, cosine distance
    store.write(SUITE, CASE, old)
    assert _check(store, result(0.5)).status is BaselineStatus.PASS
    other = result(0.5)
    other["attack"]["name"] = "dlg"
    check = _check(store, other)
    assert check.status is BaselineStatus.STALE
    assert "recorded under attack=gradmatch, this run attack=dlg" in check.message


def test_profile_is_part_of_the_identity(store: BaselineStore) -> None:
    path = store.path(SUITE, CASE)
    path.parent.mkdir(parents=True)
    without = {k: v for k, v in result(0.5).items() if k != "profile"}
    path.write_text(json.dumps(without))  # an older file: the folder names its profile
    assert _check(store, result(0.5)).status is BaselineStatus.PASS
    store.write(SUITE, CASE, result(0.5, profile="paper"))
    check = _check(store, result(0.5))
    assert check.status is BaselineStatus.STALE
    assert check.changed == (IdentityChange(field="profile", recorded="paper", current="smoke"),)


def test_identity_gains_a_field_in_one_line(store: BaselineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "IDENTITY_FIELDS", (*records.IDENTITY_FIELDS, ("recipe", "model.recipe")))
    path = store.write(SUITE, CASE, result(0.5))
    path.write_text(json.dumps({**json.loads(path.read_text()), "model": {"recipe": "v1"}}))
    check = _check(store, {**result(0.5), "model": {"recipe": "v2"}})
    assert check.changed == (IdentityChange(field="recipe", recorded="v1", current="v2"),)


def test_update_rewrites_nothing_here_and_fails_unless_accepted(store: BaselineStore) -> None:
    path = store.write(SUITE, CASE, result(0.5, iterations=400))
    before = path.read_bytes()
    check = _check(store, result(0.9), update=True)
    assert check.status is BaselineStatus.UPDATED and not check.passed and check.recorded == 0.5
    assert "baseline rewritten at" in check.message and "(--giacheck-update)" in check.message
    assert "it was recorded under iterations=400" in check.message
    assert path.read_bytes() == before, "the controller writes, from the test report; the check never does"
    accepted = _check(store, result(0.9), update=True, accept_update=True)
    assert accepted.passed and "--giacheck-update-all" in accepted.message
    assert _check(store.__class__(store.root, "paper"), result(0.9), update=True).recorded is None


@pytest.mark.parametrize("update", [False, True])
def test_corrupt_baseline_is_reported_and_left_untouched(store: BaselineStore, update: bool) -> None:
    path = store.path(SUITE, CASE)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"ssim": {"mean": "high"')
    check = _check(store, result(), update=update)
    assert check.status is BaselineStatus.CORRUPT and not check.passed
    assert check.message.startswith(f"corrupt baseline {path}: ") and "left untouched" in check.message
    with pytest.raises(BaselineError, match="corrupt baseline"):
        store.write(SUITE, CASE, result())  # an update does not overwrite it either
    assert path.read_bytes() == b'{"ssim": {"mean": "high"'


@pytest.mark.parametrize("tolerance", [math.nan, math.inf, -0.01, "nan", "abc", None, True])
def test_a_tolerance_that_disables_checks_is_refused(store: BaselineStore, tolerance: Any) -> None:
    store.write(SUITE, CASE, result(0.5))
    with pytest.raises(InvalidToleranceError, match=r"baseline tolerance .*: give a finite number >= 0"):
        _check(store, result(0.99), tolerance=tolerance)


def test_orphans(store: BaselineStore) -> None:
    store.write(SUITE, CASE, result())
    store.write(SUITE, "gone-32-bn_eval-bs1-stats_none", {**result(), "case_id": "gone"})
    assert [p.stem for p in store.orphans(SUITE, [CASE])] == ["gone-32-bn_eval-bs1-stats_none"]
    assert store.orphans("no_such_suite", []) == []


@pytest.mark.parametrize(("content", "words"), [
    (b'{"ssim": {"mean": NaN}}', "key 'ssim.mean' is NaN; valid: finite numbers only"),
    (b'{"ssim": {"mean": 0.5}, "psnr": {"per_image": [-Infinity]}}', "key 'psnr.per_image[0]' is -Infinity"),
    (b'{"ssim": {"mean": 1e999}}', "key 'ssim.mean' is inf"),
    (b'{"ssim": {"mean": true}}', "key 'ssim.mean' is true (a boolean); valid: a finite number in [-1, 1]"),
    (b'{"ssim": {"mean": 0.5}, "challenge": {"max_ssim": false, "median_ssim": 0.1}}',
     "key 'challenge.max_ssim' is false (a boolean)"),
    (b'{"ssim": {"mean": 0.5}, "challenge": {"max_ssim": 0.5, "median_ssim": 2.5}}', "'challenge.median_ssim' is 2.5"),
    (b'{"ssim": {"mean": "0.5"}}', "key 'ssim.mean' is \"0.5\" (a string)"),
    (b'{"ssim": [0.5]}', "key 'ssim' is [0.5] (an array); valid: a JSON object"),
    (b'{"ssim": {"mean": 0.5}, "attack": "gradmatch"}', "key 'attack' is \"gradmatch\" (a string); valid: a JSON obj"),
    (b'{"ssim": {"mean": 0.5}, "profile": 1}', "key 'profile' is 1 (a number); valid: a profile name"),
    (b'{"ssim": {}}', "key 'ssim.mean' is missing"),
    (b'{"psnr": 20}', "key 'ssim.mean' is missing"),
    (b"null", "holds a JSON null, not an object"),
    (b'"text"', "holds a JSON string, not an object"),
    (b"{ not json", "malformed JSON (Expecting property name enclosed in double quotes at line 1 column 3)"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b'{"case_id": "other-32-bn_eval-bs1-stats_none", "ssim": {"mean": 0.5}}', f"the baseline of '{CASE}'"),
    (None, "is a folder, not a baseline file"),
], ids=["nan", "neg-infinity-nested", "overflow", "true", "false-in-challenge", "out-of-range", "string",
        "ssim-not-object", "attack-not-object", "profile-not-string", "no-mean", "no-ssim", "null", "string-doc",
        "malformed", "not-utf8", "other-case", "folder"])
def test_an_invalid_baseline_names_the_file_and_key_and_is_never_rewritten(store: BaselineStore, content: bytes | None,
                                                                            words: str) -> None:
    path = store.path(SUITE, CASE)
    path.parent.mkdir(parents=True)
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(BaselineError, match=r"^corrupt baseline ") as info:
        store.load(SUITE, CASE)
    assert str(path) in str(info.value) and words in str(info.value) and "left untouched" in str(info.value)
    for update in (False, True):
        assert _check(store, result(), update=update).status is BaselineStatus.CORRUPT
    with pytest.raises(BaselineError, match=r"^corrupt baseline "):
        store.check_writable(SUITE, CASE)
    with pytest.raises(BaselineError, match=r"^corrupt baseline "):
        store.write(SUITE, CASE, result())
    assert path.is_dir() if content is None else path.read_bytes() == content


def test_a_valid_baseline_passes_validation(store: BaselineStore) -> None:
    store.write(SUITE, CASE, {**result(0.5), "challenge": {"max_ssim": -0.2, "median_ssim": None}})
    assert store.load(SUITE, CASE)["challenge"]["max_ssim"] == -0.2
    assert store.check_writable(SUITE, CASE) == store.path(SUITE, CASE)


def test_an_update_that_cannot_be_written_is_refused_before_it_runs(store: BaselineStore) -> None:
    store.root.mkdir()
    (store.root / "smoke").write_text("a file where the profile's folder goes")
    with pytest.raises(BaselineError, match=r"cannot be written: .*smoke is a file, not a folder"):
        store.check_writable(SUITE, CASE)
    assert (store.root / "smoke").read_text() == "a file where the profile's folder goes"


def on(machine: str, ssim: float, **attack: Any) -> dict[str, Any]:
    return {**result(ssim, **attack), "manifest": {"device_name": machine, "git_revision": "abc1234"}}


def test_each_machine_is_compared_with_its_own_record(store: BaselineStore) -> None:
    """Chaotic attacks round differently on two CPU models: an update keeps each machine's record, and a run is
    compared with its own machine's (else with the main record), at the same tolerance."""
    amd, intel = "cpu (AMD EPYC, 1 threads)", "cpu (Intel Xeon, 1 threads)"
    store.write(SUITE, CASE, on(amd, 0.40))
    assert not _check(store, on(intel, 0.47)).passed, "an unrecorded machine is compared with the main record"
    path = store.write(SUITE, CASE, on(intel, 0.47))
    data = json.loads(path.read_text())
    assert data["platforms"] == {amd: {"ssim.mean": 0.4, "git_revision": "abc1234"},
                                 intel: {"ssim.mean": 0.47, "git_revision": "abc1234"}}
    assert data["ssim"]["mean"] == 0.47, "the main record is the latest"
    assert _check(store, on(amd, 0.42)).passed and not _check(store, on(amd, 0.46)).passed
    assert "(compared with this machine's record)" in _check(store, on(intel, 0.5)).message
    other = _check(store, on("cpu (Arm Neoverse, 1 threads)", 0.5))
    assert other.passed and f"(compared with the record of {intel})" in other.message


def test_a_new_attack_identity_drops_the_other_machines_records(store: BaselineStore) -> None:
    store.write(SUITE, CASE, on("cpu (AMD EPYC, 1 threads)", 0.40))
    path = store.write(SUITE, CASE, on("cpu (Intel Xeon, 1 threads)", 0.47, iterations=400))
    assert list(json.loads(path.read_text())["platforms"]) == ["cpu (Intel Xeon, 1 threads)"]


@pytest.mark.parametrize("platforms", [[], {"m": 0.5}, {"m": {"ssim.mean": 2.0}}, {"m": {"ssim.mean": True}}])
def test_corrupt_platform_records_are_reported(store: BaselineStore, platforms: Any) -> None:
    path = store.write(SUITE, CASE, result(0.5))
    path.write_text(json.dumps({**json.loads(path.read_text()), "platforms": platforms}))
    check = _check(store, result(0.5))
    assert check.status is BaselineStatus.CORRUPT and "platforms" in check.message
