"""Tests of giacheck.report: merging results of several runs (later wins), the self-contained HTML, the Markdown
table, the Figure 4 ladder plot, and refusing folders that hold someone else's files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from giacheck.claims import ClaimResult
from giacheck.cli import main
from giacheck.errors import GiacheckError
from giacheck.records import BaselineCheck, BaselineStatus, CaseRecord
from giacheck.report import MANIFEST, CaseRow, load_results, write_report
from giacheck.report.rows import EVIDENCE_COLUMNS

ENABLED = "resnet18_cifar-32-bn_eval-bs1-stats_none"
TRAIN = "resnet18_cifar-32-bn_train-bs1-stats_none"
LADDER = [f"{model}-32-bn_eval-bs1-stats_none-init_p{p}" for model in ("swin_t_cifar", "vit_b16_cifar")
          for p in ("0.2", "0.5", "0.8")]


def _png(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path)  # one column: original above reconstruction
    return path


def _result(case_id: str, ssim: float, *, init_ssim: float | None = None) -> dict[str, Any]:
    threat: dict[str, Any] = {"labels": "known", "stats": "none"}
    if init_ssim is not None:
        threat["init_ssim"] = init_ssim
    return {"case_id": case_id, "profile": "smoke", "ssim": {"mean": ssim, "max": ssim, "per_image": [ssim]},
            "secondary": {"patch_matched_ssim": {"mean": ssim + 0.1, "per_image": [ssim + 0.1]}}, "threat": threat}


def _record(suite: str, case_id: str, ssim: float, *, claim: str = "feasible", verdict: str = "pass",
            outcome: str | None = "passed", message: str | None = None, **kwargs: Any) -> CaseRecord:
    judged = ClaimResult(kind=claim, case_id=case_id, verdict=verdict, measured=ssim, threshold=0.5,
                         message=f"{case_id}: SSIM {ssim}" if message is None else message)
    return CaseRecord.from_result(
        _result(case_id, ssim, **kwargs), suite=suite, profile="smoke", claim=judged,
        baseline=BaselineCheck(status=BaselineStatus.PASS, passed=True, path="b.json", recorded=0.7), wall_s=1.5,
        origin="computed", nodeid=f"suites/{suite}.py::t", outcome=outcome)


def _payload(suite: str, case_id: str, ssim: float, **kwargs: Any) -> dict[str, Any]:
    """A case record as the plugin writes it into results.json / results.jsonl."""
    return _record(suite, case_id, ssim, **kwargs).to_json()


def _schema0_payload(suite: str, case_id: str, ssim: float) -> dict[str, Any]:
    """A case as the plugin wrote it before records existed (no schema)."""
    return {"suite": suite, "case_id": case_id, "profile": "smoke", "claim": "feasible", "verdict": "pass",
            "message": f"{case_id}: SSIM {ssim}", "baseline": {"status": "pass", "path": "b.json", "recorded": 0.7},
            "wall_s": 1.5, "nodeid": f"suites/{suite}.py::t", "outcome": "passed", "result": _result(case_id, ssim)}


def _suite_run(folder: Path, payloads: list[dict[str, Any]], *, pngs: bool = True) -> Path:
    """What the plugin leaves in ``--giacheck-artifacts``: results.json and the per-case PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    for payload in payloads:
        if pngs:
            _png(folder / payload["profile"] / payload["suite"] / f"{payload['case_id']}.png")
    path = folder / "results.json"
    path.write_text(json.dumps({"profile": "smoke", "cases": payloads}))
    return path


def _by_id(rows: list[CaseRow]) -> dict[str, CaseRow]:
    return {row.case_id: row for row in rows}


@pytest.fixture
def merged(tmp_path: Path) -> tuple[list[CaseRow], dict[str, Path]]:
    """Two suite runs overlapping on one case, a journal from a third, and a `giacheck run --out` result."""
    first = _suite_run(tmp_path / "a", [_payload("test_table1", ENABLED, 0.70), _payload("test_table1", TRAIN, 0.01)])
    second = _suite_run(tmp_path / "b", [_payload("test_table1", ENABLED, 0.80)])
    journal = tmp_path / "c" / "results.jsonl"
    ladder = [_payload("test_fig4", case, 0.3 + 0.1 * i, init_ssim=0.6 - 0.2 * (i % 3))
              for i, case in enumerate(LADDER)]
    for payload in ladder[:-1]:  # the last ladder case has no PNG: reported, not fatal
        _png(journal.parent / "smoke" / "test_fig4" / f"{payload['case_id']}.png")
    journal.write_text("".join(json.dumps(p) + "\n" for p in ladder) + "\n")
    single = tmp_path / "runs" / "lenet_sigmoid-32-bn_eval-bs1-stats_none.json"
    single.parent.mkdir()
    single.write_text(json.dumps(_result("lenet_sigmoid-32-bn_eval-bs1-stats_none", 0.9)))
    _png(single.with_suffix(".png"))
    rows = load_results([first, second, journal, single])
    return rows, {"first": first, "second": second, "journal": journal, "single": single}


def test_merge_later_files_win(merged: tuple[list[CaseRow], dict[str, Path]], tmp_path: Path) -> None:
    rows, paths = merged
    by_id = _by_id(rows)
    assert len(rows) == 2 + len(LADDER) + 1
    assert by_id[ENABLED].ssim_mean == pytest.approx(0.80)
    assert by_id[ENABLED].source == paths["second"]
    assert by_id[ENABLED].image == tmp_path / "b" / "smoke" / "test_table1" / f"{ENABLED}.png"
    assert by_id[TRAIN].source == paths["first"]
    assert by_id[LADDER[0]].init_ssim == pytest.approx(0.6) and by_id[LADDER[0]].init_p == pytest.approx(0.2)
    assert by_id[LADDER[-1]].image is None
    single = by_id["lenet_sigmoid-32-bn_eval-bs1-stats_none"]
    assert single.suite == "" and single.claim is None and single.shown_verdict == "no claim"
    assert single.image == paths["single"].with_suffix(".png")
    reversed_rows = _by_id(load_results([paths["second"], paths["first"]]))
    assert reversed_rows[ENABLED].ssim_mean == pytest.approx(0.70)


def test_folders_are_searched(tmp_path: Path) -> None:
    run = _suite_run(tmp_path / "artifacts", [_payload("test_table1", ENABLED, 0.7)]).parent
    # stale per-case JSON of an older run inside the artifacts tree: the run's results.json speaks for it
    (run / "smoke" / "test_table1" / f"{TRAIN}.json").write_text(json.dumps(_result(TRAIN, 0.5)))
    outs = tmp_path / "outs"
    outs.mkdir()
    (outs / f"{TRAIN}.json").write_text(json.dumps(_result(TRAIN, 0.02)))
    (outs / "unrelated.json").write_text(json.dumps({"hello": 1}))  # valid JSON, not a result: skipped
    rows = _by_id(load_results([tmp_path]))
    assert set(rows) == {ENABLED, TRAIN}
    assert rows[TRAIN].ssim_mean == pytest.approx(0.02) and rows[TRAIN].image is None
    tree = _by_id(load_results([run / "smoke"]))  # an artifacts tree without results.json: suites from folders
    assert tree[TRAIN].suite == "test_table1"


def test_html_is_self_contained(merged: tuple[list[CaseRow], dict[str, Path]], tmp_path: Path) -> None:
    rows, _ = merged
    written = write_report(rows, tmp_path / "report")
    text = written["html"].read_text()
    with_png = [row for row in rows if row.image is not None]
    ladders = [key for key in written if key.startswith("ladder:")]
    in_ladders = [row for row in with_png if row.init_p is not None]  # shown again in the ladder's image grid
    assert in_ladders and len(with_png) == len(rows) - 1
    assert text.count('<img class="case" src="data:image/png;base64,') == len(with_png) + len(in_ladders)
    assert text.count('src="data:image/png;base64,') == len(with_png) + len(in_ladders) + len(ladders)
    assert "<th>Case id</th>" in text and "<th>most leaking image: SSIM</th>" in text and "<th>Verdict</th>" in text
    for row in rows:
        assert row.case_id in text
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text
    assert "SSIM 0.80" in text and "Cases without an image" in text and LADDER[-1] in text
    assert "0.700 (pass)" in text  # recorded baseline with its check status


def test_text_is_escaped(tmp_path: Path) -> None:
    payload = _payload("<b>suite</b>", ENABLED, 0.5, message='<script>alert("x")</script>')
    payload["profile"] = "smoke|`x`"
    rows = load_results([_suite_run(tmp_path / "run", [payload])])
    # a row built by hand with an id the case grammar does not read (load_results refuses one): shown, escaped,
    # never in a ladder
    odd = CaseRow(record=_record("<i>s</i>", "a&b<i>", 0.4), source=tmp_path / "results.json")
    assert odd.init_p is None and odd.architecture == "a&b<i>"
    written = write_report([*rows, odd], tmp_path / "report")
    text = written["html"].read_text()
    assert "<script" not in text and "<b>suite" not in text and "<i>" not in text
    assert "&lt;b&gt;suite&lt;/b&gt;" in text and "a&amp;b" in text and "&lt;script&gt;" in text
    md = written["md"].read_text()
    assert md.count("`a&b<i>`") == 2  # inside code spans, where nothing is markup
    outside_code = md.replace("`a&b<i>`", "")
    assert "<b>" not in outside_code and "<i>" not in outside_code and "smoke|`x`" not in outside_code
    assert "| &lt;b&gt;suite&lt;/b&gt; \\[smoke\\|\\`x\\`\\] |" in md


def test_schema0_results_are_read(tmp_path: Path) -> None:
    """results.json written before case records existed (no schema) still reports, with the same columns."""
    rows = load_results([_suite_run(tmp_path / "run", [_schema0_payload("test_table1", ENABLED, 0.5)])])
    assert rows[0].record == CaseRecord.from_json(_schema0_payload("test_table1", ENABLED, 0.5))
    assert rows[0].record.schema == 1 and rows[0].record.nodeid == "suites/test_table1.py::t"
    assert rows[0].shown_baseline == "0.700 (pass)" and rows[0].shown_verdict == "pass"
    text = write_report(rows, tmp_path / "report")["md"].read_text()
    dashes = " | ".join(["—"] * len(EVIDENCE_COLUMNS))  # a record from before challenge sets: no evidence columns
    assert f"| test_table1 | `{ENABLED}` | feasible | {dashes} | 0.700 (pass) | pass |" in text


def test_markdown_table(merged: tuple[list[CaseRow], dict[str, Path]], tmp_path: Path) -> None:
    rows, _ = merged
    text = write_report(rows, tmp_path / "report")["md"].read_text()
    assert "| suite | case id | claim | k×s | most leaking image: SSIM | re-id rank | z |" in text
    dashes = " | ".join(["—"] * len(EVIDENCE_COLUMNS))
    assert f"| test_table1 | `{ENABLED}` | feasible | {dashes} | 0.700 (pass) | pass |" in text
    assert "![SSIM vs noise, swin_t_cifar](ladder-swin_t_cifar.png)" in text


def test_ladder_plot_per_architecture(merged: tuple[list[CaseRow], dict[str, Path]], tmp_path: Path) -> None:
    rows, _ = merged
    written = write_report(rows, tmp_path / "report")
    assert {k for k in written if k.startswith("ladder:")} == {"ladder:swin_t_cifar", "ladder:vit_b16_cifar"}
    for key in ("ladder:swin_t_cifar", "ladder:vit_b16_cifar"):
        assert written[key].parent == tmp_path / "report"
        with Image.open(written[key]) as image:
            assert image.format == "PNG" and image.size[0] > 300
    html_text = written["html"].read_text()
    assert "Figure 4 ladder" in html_text and "(start 0.60)" in html_text
    no_ladder = write_report([r for r in rows if r.init_p is None], tmp_path / "plain")
    assert not any(k.startswith("ladder:") for k in no_ladder)
    assert not list((tmp_path / "plain").glob("ladder-*.png"))


def test_rerun_replaces_its_own_report(merged: tuple[list[CaseRow], dict[str, Path]], tmp_path: Path) -> None:
    rows, _ = merged
    out = tmp_path / "report"
    write_report(rows, out)
    assert list(out.glob("ladder-*.png"))
    write_report([r for r in rows if r.init_p is None], out)  # a previous report only: replaced
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "report.html", "report.md"])


@pytest.mark.parametrize("foreign", ["notes.txt", "report.md", "sub/"])
def test_refuses_folder_with_foreign_files(foreign: str, tmp_path: Path) -> None:
    rows = load_results([_suite_run(tmp_path / "run", [_payload("test_table1", ENABLED, 0.5)])])
    out = tmp_path / "out"
    target = out / foreign.rstrip("/")
    if foreign.endswith("/"):
        target.mkdir(parents=True)
    else:
        out.mkdir()
        target.write_text("mine, do not touch")
    with pytest.raises(GiacheckError, match=re.escape(foreign.rstrip("/"))) as info:
        write_report(rows, out)
    assert "did not write" in str(info.value) and "nothing was written" in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == [foreign.rstrip("/")]
    if not foreign.endswith("/"):
        assert target.read_text() == "mine, do not touch"


def test_refuses_foreign_file_next_to_previous_report(tmp_path: Path) -> None:
    rows = load_results([_suite_run(tmp_path / "run", [_payload("test_table1", ENABLED, 0.5)])])
    out = tmp_path / "out"
    write_report(rows, out)
    (out / "keep.csv").write_text("a,b\n")
    before = (out / "report.html").read_bytes()
    with pytest.raises(GiacheckError, match=r"keep\.csv"):
        write_report(rows, out)
    assert (out / "report.html").read_bytes() == before and (out / "keep.csv").read_text() == "a,b\n"


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "results.json"
    broken.write_text('{"profile": "smoke", "cases": [')
    with pytest.raises(GiacheckError, match=r"results\.json: malformed JSON") as info:
        load_results([broken])
    assert str(broken) in str(info.value)
    journal = tmp_path / "j" / "results.jsonl"
    journal.parent.mkdir()
    journal.write_text(json.dumps(_payload("s", ENABLED, 0.5)) + "\n{oops\n")
    with pytest.raises(GiacheckError, match=r"results\.jsonl, line 2: malformed JSON"):
        load_results([journal])
    with pytest.raises(GiacheckError, match="malformed JSON"):  # found while searching a folder, too
        load_results([tmp_path])


@pytest.mark.parametrize(("content", "match"), [
    ({"hello": 1}, "not a giacheck result"),
    ({"profile": "smoke", "cases": [{**_payload("s", ENABLED, 0.5), "schema": 2}]},
     r"cases\[0\]: case record of schema 2; this giacheck reads schema 1"),
    ({"profile": "smoke", "cases": [{**_payload("s", ENABLED, 0.5), "verdict": "great"}]},
     r"cases\[0\]: 'verdict' is 'great'; valid: pass, fail, inconclusive"),
    ({"profile": "smoke", "cases": [{"suite": "s", "case_id": "c", "profile": "smoke", "result": {}}]},
     r"cases\[0\]\.result: missing 'ssim\.mean'"),
    ({"profile": "smoke", "cases": [{"suite": "s", "case_id": "c", "profile": "smoke",
                                     "result": {"ssim": {"mean": "high", "max": 1}}}]}, "'ssim.mean' is 'high'"),
])
def test_invalid_results_are_rejected(content: Any, match: str, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content))
    with pytest.raises(GiacheckError, match=match):
        load_results([path])


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(GiacheckError, match="no such file or folder"):
        load_results([tmp_path / "absent.json"])
    with pytest.raises(GiacheckError, match=r"no results\.json"):
        load_results([tmp_path])
    with pytest.raises(GiacheckError, match="no cases"):
        write_report([], tmp_path / "out")


@pytest.mark.parametrize(("claim", "verdict", "outcome", "shown"), [
    ("feasible", "pass", "passed", "pass"),
    ("feasible", "pass", "failed", "fail(base)"),
    ("infeasible", "inconclusive", "failed", "inconclusive"),
    ("feasible", "fail", "skipped", "xfail: fail"),
    ("regression", "pass", "passed", "regression"),
    ("regression", "pass", "failed", "fail(base)"),
])
def test_shown_verdict_matches_suite_summary(claim: str, verdict: str, outcome: str, shown: str) -> None:
    row = CaseRow(record=_record("s", ENABLED, 0.5, claim=claim, verdict=verdict, outcome=outcome),
                  source=Path("results.json"))
    assert row.shown_verdict == shown


def test_cli_report(merged: tuple[list[CaseRow], dict[str, Path]], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    _, paths = merged
    out = tmp_path / "cli-report"
    assert main(["report", str(paths["first"]), str(paths["journal"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:2] == [str(out / "report.html"), str(out / "report.md")]
    assert all(Path(p).is_file() for p in printed)
    (out / "foreign.txt").write_text("x")
    assert main(["report", str(paths["first"]), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("giacheck: error: ") and "foreign.txt" in captured.err


def test_the_verdict_table_shows_the_evidence_of_a_challenge_set(tmp_path: Path) -> None:
    """A case over a challenge set: its most leaking image, rank, z, chance level, the negative's kind."""
    from _evidence import _evidence, _image, _trial

    case = "resnet18_cifar-32-bn_train-bs1-stats_none"
    evidence = _evidence(case, [_trial(case, "rocket", [_image(0.05, 0.4)], objective=0.39, truth=0.0058),
                                _trial(case, "hubble_deep_field", [_image(0.02, 0.8)], objective=0.41,
                                       truth=0.0057)])
    result = {**_result(case, 0.05), "challenge": evidence.to_dict()}
    judged = ClaimResult(kind="infeasible", case_id=case, verdict="pass", measured=0.05, threshold=0.025, message="m")
    record = CaseRecord.from_result(result, suite="test_table1", profile="smoke", claim=judged, baseline=None,
                                    wall_s=1.0, origin="computed", outcome="passed")
    assert record.evidence is not None and record.evidence.limitation == "attack-limited"
    row = CaseRow(record=record, source=tmp_path / "results.json")
    assert row.evidence_cells() == ("2", "rocket 0.050", "40/100", "+0.0", "0.120", "0/2", "none", "attack-limited",
                                    "0.3900 > 0.0058")
    text = write_report([row], tmp_path / "report")["md"].read_text()
    assert "| rocket 0.050 | 40/100 |" in text and "attack-limited" in text


def test_a_non_finite_score_of_a_challenge_set_is_shown_as_such(tmp_path: Path) -> None:
    """NaN in the evidence (the most leaking image's SSIM, z) is n/a, and the passing claim is shown inconclusive."""
    from _evidence import _evidence, _image, _trial

    case = "resnet18_cifar-32-bn_train-bs1-stats_none"
    evidence = _evidence(case, [_trial(case, "rocket", [_image(0.05, 0.4)], objective=0.39, truth=0.0058)]).to_dict()
    evidence["worst"] |= {"ssim": float("nan"), "z": float("nan")}
    judged = ClaimResult(kind="infeasible", case_id=case, verdict="pass", measured=0.05, threshold=0.025, message="m")
    record = CaseRecord.from_result({**_result(case, 0.05), "challenge": evidence}, suite="test_table1",
                                    profile="smoke", claim=judged, baseline=None, wall_s=1.0, origin="computed",
                                    outcome="passed")
    row = CaseRow(record=record, source=tmp_path / "results.json")
    assert row.non_finite == ("worst_ssim",)
    cells = row.evidence_cells()
    assert cells[1] == "rocket n/a (non-finite)" and cells[3] == "n/a (non-finite)"
    assert row.shown_verdict == "inconclusive (non-finite SSIM)"
    finite = CaseRow(record=CaseRecord.from_result({**_result(case, 0.05)}, suite="s", profile="smoke", claim=judged,
                                                   baseline=None, wall_s=None, origin=None, outcome="passed"),
                     source=tmp_path / "results.json")
    assert finite.non_finite == () and finite.shown_verdict == "pass"
