"""A vendor pack recorded with DP-SGD on: the same client with its defence silently switched off fails against
the recorded baseline, with the message a CI log shows. The model is the DLG LeNet at 16 px, whose undefended
update the pack's control shows to leak."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

# The vendor's own DP-SGD (through the Defence seam): a configuration flag that silently skips the clipping and
# the noise (ACME_DP_OFF=1) is the regression the pack must catch. Its id token stays 'acme_dp1'.
VENDOR_DP = '''
import os

from giacheck.defences import DPSGD, register_defence
from giacheck.specs import format_number


@register_defence("acme_dp")
class AcmeDP(DPSGD):
    name = "acme_dp"

    @property
    def token(self):
        return f"acme_dp{format_number(self.noise_multiplier)}"

    def apply(self, tensors, *, generator, batch_size=None):
        if os.environ.get("ACME_DP_OFF") == "1":  # per-sample gradients averaged: plain SGD
            n = next(iter(tensors.values())).shape[0]
            return {name: t.sum(0) / (batch_size or n) for name, t in tensors.items()}
        return super().apply(tensors, generator=generator, batch_size=batch_size)
'''

PACK_MODULE = '''
import pytest

import vendor_dp  # registers the vendor's defence
from giacheck.pack import Grid, Pack, Rule

PACK = Pack(name="acme_dp", model="giacheck.models.lenet:lenet_sigmoid", input_size=16,
            grid=Grid(batch_sizes=1, bn="eval", defences=("acme_dp1",)),
            rules=(Rule("no configuration exceeds SSIM 0.3", max_ssim=0.3),))


def test_control(gia):
    gia.pack_control(PACK)


@pytest.mark.parametrize("case_id", PACK.case_ids())
def test_configuration(gia, case_id):
    gia.pack_case(PACK, case_id)
'''

CASE = "acme_dp-16-bn_eval-bs1-stats_none-def_acme_dp1"


def test_dp_pack_passes_then_fails_when_the_defence_is_silently_removed(pytester: pytest.Pytester,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(vendor_dp=VENDOR_DP, test_privacy_pack=PACK_MODULE)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    monkeypatch.delenv("ACME_DP_OFF", raising=False)
    pytester.runpytest_subprocess("--giacheck-update-all").assert_outcomes(passed=2)
    baseline = pytester.path / "baselines" / "smoke" / "acme_dp" / f"{CASE}.json"
    recorded = json.loads(baseline.read_text())
    assert recorded["manifest"]["model_change"].startswith("none needed: Opacus supports the model")
    assert recorded["threat"]["privacy"][0]["defence"] == "acme_dp1"
    assert not recorded["challenge"]["leaks"]
    before = baseline.read_bytes()
    pytester.runpytest_subprocess().assert_outcomes(passed=2)

    monkeypatch.setenv("ACME_DP_OFF", "1")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        f"*{CASE} (highest image SSIM): LEAKAGE ROSE above the recorded baseline — measured SSIM 0.*, recorded "
        f"{recorded['challenge']['max_ssim']:.3f}, tolerance 0.060 (one-sided)*"])
    assert baseline.read_bytes() == before, "a failing run never rewrites a baseline"
