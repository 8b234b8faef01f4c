"""Tests of the report's defence curves (giacheck.report.curves): defended cases of one configuration whose chains
differ in one token's value are drawn as leakage and utility against the defence's strength, in HTML (plot and
image ladder), in Markdown (a table) and as a PNG listed in the output manifest."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from giacheck.records import CaseRecord
from giacheck.report import MANIFEST, CaseRow, load_results, write_report
from giacheck.report.curves import curves, shown_epsilon, x_scale

BASE = "resnet18_cifar-32-bn_eval-bs1-stats_none-state_warm100"
SUITE = "test_deployment"


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), (40, 120, 200)).save(path)
    return path


def _result(case_id: str, worst: float, *, reidentified: int | None = None, epsilon: float | None = None,
            utility: dict[str, float] | None = None) -> dict[str, Any]:
    """A result dict as ``Result.to_dict()`` writes it, with the parts the curves read."""
    result: dict[str, Any] = {"case_id": case_id, "profile": "smoke",
                              "ssim": {"mean": worst / 2, "max": worst / 2, "per_image": [worst / 2]},
                              "threat": {"labels": "known", "stats": "none"}}
    if reidentified is not None:
        result["challenge"] = {"max_ssim": worst, "reidentified": reidentified, "leaks": reidentified > 0}
    if epsilon is not None:
        token = case_id.rsplit("-def_", 1)[1]
        bounded = math.isfinite(epsilon)  # as giacheck.defences.privacy writes it: JSON has no infinity
        result["threat"]["privacy"] = [{"defence": token, "epsilon": epsilon if bounded else None,
                                        "bounded": bounded, "delta": 1e-5}]
    if utility is not None:
        result["utility"] = utility
    return result


def _run(folder: Path, results: list[dict[str, Any]]) -> list[CaseRow]:
    """A suite run (results.json and a PNG per case), read back as the report reads it."""
    payloads = [CaseRecord.from_result(r, suite=SUITE, profile="smoke", claim=None, baseline=None, wall_s=1.0,
                                       origin="computed").to_json() for r in results]
    for payload in payloads:
        _png(folder / "smoke" / SUITE / f"{payload['case_id']}.png")
    path = folder / "results.json"
    path.write_text(json.dumps({"profile": "smoke", "cases": payloads}))
    return load_results([path])


def _utility(cosine: float, loss: float) -> dict[str, float]:
    return {"cosine": cosine, "relative_descent": loss}


def _dpsgd_family() -> list[dict[str, Any]]:
    """The undefended case and three DP-SGD noise multipliers, listed out of strength order."""
    return [
        _result(f"{BASE}-def_dpsgd1", 0.05, reidentified=0, epsilon=2.5, utility=_utility(0.30, 0.10)),
        _result(BASE, 0.92, reidentified=4),
        _result(f"{BASE}-def_dpsgd0", 0.90, reidentified=3, epsilon=math.inf, utility=_utility(0.99, 0.49)),
        _result(f"{BASE}-def_dpsgd0.1", 0.61, reidentified=1, epsilon=812.0, utility=_utility(0.80, 0.40)),
    ]


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def test_a_family_of_three_strengths_is_one_curve(tmp_path: Path) -> None:
    rows = _run(tmp_path / "run", _dpsgd_family())
    out = tmp_path / "report"
    written = write_report(rows, out)
    keys = [key for key in written if key.startswith("curve:")]
    assert keys == [f"curve:{BASE}-def_dpsgd"]
    png = written[keys[0]]
    assert png == out / f"curve-{BASE}-def_dpsgd.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 600  # two panels side by side
    manifest = json.loads((out / MANIFEST).read_text())["written"]
    assert manifest[png.name] == "report"
    assert sorted(p.name for p in out.glob("curve-*.png")) == [png.name]

    html_text = written["html"].read_text()
    assert '<a href="#curves">defence curves</a>' in html_text
    section = _section(html_text, '<section id="curves">', "</section>")
    assert f"<h3>{BASE}: dpsgd</h3>" in section
    assert section.count('src="data:image/png;base64,') == 1 + 3  # the plot, then the image ladder
    assert section.count('<img class="case"') == 3
    ladder = [re.sub(r"<wbr>", "", m) for m in re.findall(r'<div class="id">([^<]*(?:<wbr>[^<]*)*)</div>', section)]
    assert ladder == [f"{BASE}-def_dpsgd{s}" for s in ("0", "0.1", "1")]  # by strength, not as listed
    assert '<td class="num">∞</td>' in section and '<td class="num">812</td>' in section
    assert "<td>yes</td>" in section and "<td>no</td>" in section

    md = written["md"].read_text()
    section = _section(md, "## Defence strength: leakage and utility", "## Images")
    assert f"![leakage and utility vs dpsgd](curve-{BASE}-def_dpsgd.png)" in section
    assert "| strength | ε | worst SSIM | re-identified | cosine | relative descent |" in section
    table = [line for line in section.splitlines() if line.startswith("| ") and "strength" not in line]
    assert table == [
        "| undefended | — | 0.920 | yes | 1.000 | 1.000 |",
        "| 0 | ∞ | 0.900 | yes | 0.990 | 0.490 |",
        "| 0.1 | 812 | 0.610 | yes | 0.800 | 0.400 |",
        "| 1 | 2.5 | 0.050 | no | 0.300 | 0.100 |",
    ]


def test_the_undefended_case_is_optional_and_utility_may_be_absent(tmp_path: Path) -> None:
    results = [_result(f"{BASE}-def_prune{p}", s) for p, s in (("0.5", 0.7), ("0.99", 0.2))]  # no challenge set
    (curve,) = curves(_run(tmp_path / "run", results))
    assert curve.undefended is None and curve.defence == "prune" and curve.png is not None
    assert [p.strength for p in curve.points] == [0.5, 0.99]
    md = write_report(curve.rows, tmp_path / "report")["md"].read_text()
    assert "| 0.5 | — | 0.350 | — | — | — |" in md  # ssim.max without a challenge set; nothing else recorded


def test_a_single_defended_case_makes_no_section(tmp_path: Path) -> None:
    rows = _run(tmp_path / "run", [_result(BASE, 0.9, reidentified=2),
                                   _result(f"{BASE}-def_dpsgd0.1", 0.6, reidentified=1, epsilon=812.0)])
    assert curves(rows) == []
    written = write_report(rows, tmp_path / "report")
    assert not any(key.startswith("curve:") for key in written)
    assert not list((tmp_path / "report").glob("curve-*.png"))
    assert "Defence strength" not in written["html"].read_text() and 'id="curves"' not in written["html"].read_text()
    assert "Defence strength" not in written["md"].read_text()


def test_mixed_token_names_do_not_group(tmp_path: Path) -> None:
    ids = [f"{BASE}-def_{chain}" for chain in ("clip1", "clip1+noise0.01", "dpsgd0.1", "prune0.9", "quant4",
                                               "secagg2", "fp16")]
    rows = _run(tmp_path / "run", [_result(case, 0.3) for case in ids])
    assert curves(rows) == []
    assert not any(key.startswith("curve:") for key in write_report(rows, tmp_path / "report"))


def test_clip_alone_is_not_in_the_clip_noise_family(tmp_path: Path) -> None:
    chains = ("clip1", "clip1+noise0.01", "clip1+noise0.1", "clip2+noise0.1", "clip2+noise0.5")
    rows = _run(tmp_path / "run", [_result(f"{BASE}-def_{c}", 0.3) for c in chains])
    found = {c.defence: [p.row.case_id.rsplit("-def_", 1)[1] for p in c.points] for c in curves(rows)}
    assert found == {"clip1+noise": ["clip1+noise0.01", "clip1+noise0.1"],
                     "clip+noise0.1": ["clip1+noise0.1", "clip2+noise0.1"],
                     "clip2+noise": ["clip2+noise0.1", "clip2+noise0.5"]}


def test_families_of_other_configurations_stay_apart(tmp_path: Path) -> None:
    other = BASE.replace("bn_eval", "bn_train")
    rows = _run(tmp_path / "run", [_result(f"{base}-def_dpsgd{z}", 0.3) for base in (BASE, other)
                                   for z in ("0.1", "1")])
    assert sorted(c.base for c in curves(rows)) == sorted([BASE, other])


@pytest.mark.parametrize(("strengths", "scale"), [
    ((0.0, 0.001, 0.01), "symlog"),
    ((0.001, 0.01, 0.1), "log"),
    ((0.5, 0.9, 0.99), "linear"),
    ((2.0, 4.0, 8.0), "linear"),
])
def test_the_strength_axis(strengths: tuple[float, ...], scale: str) -> None:
    assert x_scale(strengths)[0] == scale
    if scale == "symlog":
        assert x_scale(strengths)[1] == {"linthresh": 0.001}


def test_epsilon_as_shown() -> None:
    assert [shown_epsilon(e) for e in (0.84, 812.0, 5e4, 3.2e7, math.inf, None)] == [
        "0.84", "812", "50,000", "3.2e+07", "∞", "—"]


def test_without_matplotlib_tables_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # the import fails
    rows = _run(tmp_path / "run", _dpsgd_family())
    written = write_report(rows, tmp_path / "report")
    assert not any(key.startswith("curve:") for key in written)
    assert not list((tmp_path / "report").glob("curve-*.png"))
    md = written["md"].read_text()
    assert "| 0.1 | 812 | 0.610 | yes | 0.800 | 0.400 |" in md and "![leakage and utility" not in md
    html_text = written["html"].read_text()
    assert 'id="curves"' in html_text and html_text.count('<img class="case"') == 4 + 3


def test_a_rerun_removes_curves_no_longer_in_the_results(tmp_path: Path) -> None:
    rows = _run(tmp_path / "run", _dpsgd_family())
    out = tmp_path / "report"
    write_report(rows, out)
    assert list(out.glob("curve-*.png"))
    write_report([r for r in rows if r.undefended_id is None], out)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "report.html", "report.md"])
