"""Tests of ``giacheck audit`` and ``giacheck init-pack``: an audit end to end (results.json in the suites'
format, PNGs, a self-contained report.html with the verdict table), exit 1 naming what leaks, exit 3 when the
control does not reconstruct, reruns into a previous audit's folder, and bad input refused before any compute
with a clear message, touching nothing."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from _evidence import _evidence, _image, _trial
from PIL import Image

from giacheck import claims
from giacheck.audit import EXIT_INCONCLUSIVE, EXIT_LEAKS, EXIT_OK, NOT_CHECKED, _Progress, exit_code, run_audit
from giacheck.cli import main
from giacheck.errors import GiacheckError
from giacheck.models import registry
from giacheck.outputs import LOCK, MANIFEST
from giacheck.pack import Grid, Pack, Rule
from giacheck.records import BaselineStatus, CaseRecord
from giacheck.specs import AttackSpec

# A vendor's CNN, not in the registry. Smoke budget at 16 px over the smoke challenge set: bn_train bs1 not
# re-identified (most leaking image SSIM 0.006, p 0.27), bn_eval bs1 re-identified (0.681, p 0.0078); the default
# control (lenet_sigmoid-16) 0.853, p 0.0039.
TINYMOD = '''
from torch import nn

from giacheck.models import ModelEntry


def _factory(resolution, num_classes):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def tiny_cnn():
    return ModelEntry(name="tiny_cnn", upstream="test", factory=_factory, default_size=16, num_classes=10,
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True)


def broken():
    raise RuntimeError("weights server unreachable")
'''

MODEL = ["--model", "tinymod:tiny_cnn", "--input-size", "16"]
CONTROL = "lenet_sigmoid-16-bn_eval-bs1-stats_none"
TRAIN = "tiny_cnn-16-bn_train-bs1-stats_none"
EVAL = "tiny_cnn-16-bn_eval-bs1-stats_none"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"


@pytest.fixture(autouse=True)
def tinymod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``tinymod`` importable, one torch thread, and the model aliases a test registers forgotten after it."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "tinymod.py").write_text(TINYMOD)
    monkeypatch.syspath_prepend(str(modules))  # also undoes the cwd that main() puts on sys.path
    monkeypatch.delitem(sys.modules, "tinymod", raising=False)
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _refuse_compute(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any attack fail the test (audit imports ``run_case`` from giacheck.runner when it starts)."""
    calls: list[str] = []

    def refuse(case: object, **kwargs: object) -> None:
        calls.append(str(case))
        raise AssertionError(f"run_case({case}) was called: the input should have been refused before any compute")

    monkeypatch.setattr("giacheck.runner.run_case", refuse)
    return calls


@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return _refuse_compute(monkeypatch)


def _audit(out: Path, *extra: str) -> int:
    return main(["audit", *MODEL, *extra, "--out", str(out)])


def _tree(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under ``root`` with its bytes and mtime (None for folders): to check nothing was touched."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": (root.read_bytes(), root.stat().st_mtime_ns)}
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


class _Report(HTMLParser):
    """What report.html loads and shows: every URL-valued attribute, the <img> sources, the verdict table."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.verdict_tables = 0
        self.verdicts: dict[str, str] = {}
        self._section: str | None = None
        self._row: dict[str, str] | None = None
        self._cell: tuple[str, list[str]] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.urls += [attr[k] for k in ("src", "href", "srcset", "poster", "action", "data", "background")
                      if k in attr]
        if tag == "img":
            self.images.append(attr.get("src", ""))
        elif tag == "section":
            self._section = attr.get("id")
        elif self._section == "verdicts":
            if tag == "table":
                self.verdict_tables += 1
            elif tag == "tr":
                self._row = {}
            elif tag == "td" and self._row is not None:
                self._cell = (attr.get("class", "").split() or [""])[0], []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row[self._cell[0]] = "".join(self._cell[1]).strip()
            self._cell = None
        elif tag == "tr" and self._row:
            self.verdicts[self._row["id"]] = self._row["verdict"]
            self._row = None


def _embedded_pngs(report: _Report) -> list[bytes]:
    pngs = []
    for src in report.images:
        assert src.startswith(DATA_PNG), f"<img> not embedded as a data URI: {src[:80]!r}"
        data = base64.b64decode(src.removeprefix(DATA_PNG), validate=True)
        assert data.startswith(PNG_SIGNATURE), "an embedded image is not a PNG"
        pngs.append(data)
    return pngs


# ------------------------------------------------------------------------------------------------ end to end
def test_audit_end_to_end_then_rerun_that_leaks(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    out = tmp_path / "audit"
    code = _audit(out, "--batch-sizes", "1", "--bn", "train", "--stats", "none", "--progress")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["pass", CONTROL] and lines[0].endswith("(feasible)")
    assert lines[1].split()[:2] == ["pass", TRAIN] and lines[1].endswith("(infeasible)")
    assert lines[-2] == f"report: {out / 'report.html'}"
    assert lines[-1] == "audit: no configuration leaks an identifiable image (exit 0)"
    # --progress draws the bar even into a pipe (standard error is not a terminal here)
    assert captured.err.startswith("\r") and "| 1/2 [" in captured.err and "| 2/2 [" in captured.err
    assert captured.err.endswith("\n")

    # results.json in the suites' format (control first), the journal holds the same, PNGs beside them
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, LOCK, "audit-state.json", "report.html",
                                                            "report.md", "results.json", "results.jsonl", "smoke"])
    assert json.loads((out / MANIFEST).read_text()) == {"written": {
        "audit-state.json": "audit", "report.html": "report", "report.md": "report", "results.json": "audit",
        "results.jsonl": "audit", "smoke": "audit"}}, "one manifest lists what the audit and its report wrote"
    assert json.loads((out / "audit-state.json").read_text())["finished"] is True
    assert (out / LOCK).read_text() == "", "the lock is released (and its pid cleared) at the end"
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"profile", "cases"} and results["profile"] == "smoke"
    cases = results["cases"]
    assert [c["case_id"] for c in cases] == [CONTROL, TRAIN]
    assert [(c["suite"], c["claim"], c["verdict"], c["outcome"]) for c in cases] == [
        ("tiny_cnn", "feasible", "pass", "passed"), ("tiny_cnn", "infeasible", "pass", "passed")]
    assert cases[0]["result"]["challenge"]["leaks"] and not cases[1]["result"]["challenge"]["leaks"]
    assert cases[0]["result"]["challenge"]["trials"] == 2, "the smoke challenge set: 2 images x 1 seed"
    assert cases[1]["message"].startswith("rule(s) 'no configuration leaks an identifiable image': ")
    assert all(c["schema"] == 1 and c["baseline"]["status"] == "not checked" for c in cases)
    assert [CaseRecord.from_json(c).claim for c in cases] == [claims.ClaimKind.FEASIBLE, claims.ClaimKind.INFEASIBLE]
    journal = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert journal == cases
    pngs = {}
    for case_id in (CONTROL, TRAIN):
        png = out / "smoke" / "tiny_cnn" / f"{case_id}.png"
        with Image.open(png) as image:
            # every trial's private image above its reconstruction: 2 trials side by side
            assert image.format == "PNG" and image.size == (2 * 16 * 4, 2 * 16 * 4)
        pngs[case_id] = png.read_bytes()
        assert json.loads(png.with_suffix(".json").read_text())["case_id"] == case_id

    # report.html is self-contained: images embedded as PNG data URIs, nothing loaded from anywhere
    text = (out / "report.html").read_text(encoding="utf-8")
    report = _Report(text)
    embedded = _embedded_pngs(report)
    assert len(embedded) >= 2 and set(pngs.values()) <= set(embedded), "each case's PNG is embedded"
    assert all(url.startswith(("#", DATA_PNG)) for url in report.urls), report.urls
    assert not report.tags & {"script", "link", "iframe", "object", "embed"}
    assert "@import" not in text and "url(" not in text
    assert report.verdict_tables == 1 and report.verdicts == {CONTROL: "pass", TRAIN: "pass"}
    markdown = (out / "report.md").read_text()
    assert f"`{CONTROL}`" in markdown and f"`{TRAIN}`" in markdown and "| infeasible |" in markdown

    # a rerun into the previous audit's folder is allowed; bn_eval under a stricter rule leaks: exit 1, named
    caplog.set_level(logging.INFO, logger="giacheck.audit")
    code = _audit(out, "--bn", "train,eval", "--rule", "bn=eval:0", "--no-progress")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.out.splitlines()[-1] == f"audit: LEAKS: {EVAL} (exit 1)"
    assert "\r" not in captured.err, "--no-progress: no bar"
    logged = [m for m in caplog.messages if m.startswith("[")]
    assert [m.split(": worst image SSIM ")[0] for m in logged] == [f"[1/3] {CONTROL}", f"[2/3] {TRAIN}",
                                                                   f"[3/3] {EVAL}"]
    assert [m.rsplit(" ", 1)[1] for m in logged] == ["pass", "pass", "fail"]
    rerun = json.loads((out / "results.json").read_text())["cases"]
    assert [(c["case_id"], c["verdict"]) for c in rerun] == [(CONTROL, "pass"), (TRAIN, "pass"), (EVAL, "fail")]
    assert rerun[2]["result"]["ssim"]["mean"] > 0.0
    assert rerun[2]["message"].startswith("rule(s) 'no configuration leaks an identifiable image'; 'bn=eval: no "
                                          "image re-identified or above SSIM 0': ") and "FAILS (re-identified)" in \
        rerun[2]["message"], "every rule that applies is named; the image is re-identified"
    assert rerun[1]["message"].startswith("rule(s) 'no configuration leaks an identifiable image': "), "bn=eval only"
    assert len((out / "results.jsonl").read_text().splitlines()) == 3, "the journal starts afresh"
    assert (out / "smoke" / "tiny_cnn" / f"{EVAL}.png").is_file()
    report = _Report((out / "report.html").read_text(encoding="utf-8"))
    assert report.verdicts == {CONTROL: "pass", TRAIN: "pass", EVAL: "fail"}
    assert len(_embedded_pngs(report)) >= 3
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert f"LEAKS: {EVAL} (exit 1)." in html_text, "the report states the audit's verdict first"
    assert ("Rule: bn=eval: no image re-identified or above SSIM 0 (no image re-identified; every image SSIM ≤ 0 "
            "where bn=eval).") in html_text
    assert f"Positive control: {CONTROL} must re-identify an image" in (out / "report.md").read_text()

    # ... but not once the folder also holds someone else's file: refused before any compute, nothing touched
    (out / "notes.txt").write_text("do not lose me\n")
    before = _tree(out)
    calls = _refuse_compute(monkeypatch)
    assert _audit(out, "--no-progress") == 2
    captured = capsys.readouterr()
    assert "notes.txt" in captured.err and "did not write" in captured.err and captured.out == ""
    assert _tree(out) == before and calls == []


def test_audit_api_inconclusive_when_the_control_does_not_reconstruct(tmp_path: Path) -> None:
    """Two iterations reconstruct nothing: "below threshold" then proves nothing (exit 3), whatever the SSIM."""
    pack = Pack(name="tiny_cnn", model="tinymod:tiny_cnn", input_size=16,
                grid=Grid(bn=("train", "eval"), stats=("none", "exact")),
                rules=(Rule("no configuration leaks an identifiable image"),), attack=AttackSpec(iterations=2))
    stream = io.StringIO()
    outcome = run_audit(pack, profile="smoke", device="cpu", out=tmp_path / "out", progress=True, stream=stream)
    assert outcome.exit_code == EXIT_INCONCLUSIVE and outcome.leaking == []
    exact = "tiny_cnn-16-bn_train-bs1-stats_exact"
    assert [(c.case_id, c.claim, c.verdict) for c in outcome.cases] == [
        (CONTROL, "feasible", "fail"), (TRAIN, "infeasible", "inconclusive"), (exact, "infeasible", "inconclusive"),
        (EVAL, "infeasible", "inconclusive")]
    assert [case_id for case_id, _ in outcome.not_applicable] == ["tiny_cnn-16-bn_eval-bs1-stats_exact"]
    assert all(c.result["iterations"] == 2 for c in outcome.cases), "the control runs under the same budget"
    assert all(c.identity["iterations"] == 2 and c.identity["attack"] == "gradmatch" for c in outcome.cases)
    assert all(c.baseline is not None and c.baseline.status is BaselineStatus.NOT_CHECKED for c in outcome.cases)
    assert set(outcome.files) >= {"results", "journal", "html", "md"}
    assert all(path.is_file() for path in outcome.files.values())
    bar = stream.getvalue()
    assert [f"| {i}/4 [" in bar for i in range(1, 5)] == [True] * 4 and bar.endswith("\n")
    assert _Report((tmp_path / "out" / "report.html").read_text()).verdicts[TRAIN] == "inconclusive"


def test_progress_bar_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    bar = _Progress(7, stream, enabled=True)
    for i in range(7):
        bar.step(f"case {i}: SSIM 0.100 pass")
    bar.close()
    text = stream.getvalue()
    assert [f"| {i}/7 [" in text for i in range(1, 8)] == [True] * 7 and "100%|" in text and text.endswith("\n")
    assert "case 6: SSIM 0.100 pass" in text
    caplog.set_level(logging.INFO, logger="giacheck.audit")
    quiet = io.StringIO()
    bar = _Progress(2, quiet, enabled=False)
    bar.step("a")
    bar.step("b")
    bar.close()
    assert quiet.getvalue() == "" and caplog.messages == ["[1/2] a", "[2/2] b"]


def _judged(claim: claims.ClaimResult, ssim: float = 0.5) -> CaseRecord:
    result = {"case_id": claim.case_id, "profile": "smoke", "ssim": {"per_image": [ssim], "mean": ssim, "max": ssim}}
    return CaseRecord.from_result(result, suite="p", profile="smoke", claim=claim, baseline=NOT_CHECKED, wall_s=1.0,
                                  origin="computed")


def _ev(case: str, ssim: float, p: float):
    return _evidence(case, [_trial(case, "astronaut", [_image(ssim, p)])])


def test_exit_code_from_records() -> None:
    good, weak = claims.feasible(_ev(CONTROL, 0.9, 0.001)), claims.feasible(_ev(CONTROL, 0.1, 0.5))
    holds = claims.infeasible(_ev(TRAIN, 0.1, 0.5), control=good)
    leaks = claims.infeasible(_ev(EVAL, 0.5, 0.001), control=good)
    unsure = claims.infeasible(_ev(TRAIN, 0.1, 0.5), control=weak)
    assert exit_code([_judged(good), _judged(holds)]) == EXIT_OK == 0
    assert exit_code([_judged(good), _judged(holds), _judged(leaks)]) == EXIT_LEAKS == 1
    assert exit_code([_judged(weak), _judged(unsure)]) == EXIT_INCONCLUSIVE == 3
    assert exit_code([_judged(weak), _judged(claims.regression(_ev(TRAIN, 0.5, 0.5)))]) == EXIT_INCONCLUSIVE
    assert exit_code([_judged(good), _judged(holds, ssim=float("nan"))]) == EXIT_INCONCLUSIVE, \
        "a score that is not a number never reads as 'no configuration leaks'"


# ------------------------------------------------------------------------------------------------ the output folder
def test_audit_refuses_a_folder_with_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  no_compute: list[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"my notes\r\n\x00 keep me")
    before = _tree(out)
    assert _audit(out) == 2
    err = capsys.readouterr().err
    assert err.startswith("giacheck: error: --out ") and "notes.txt" in err and "nothing was run or written" in err
    assert _tree(out) == before and no_compute == []


def test_audit_refuses_a_file_as_out(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     no_compute: list[str]) -> None:
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    before = _tree(out)
    assert _audit(out) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert _tree(out) == before


def test_audit_refuses_a_report_folder_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       no_compute: list[str]) -> None:
    """A report.html that no audit wrote (no manifest lists it) is not overwritten, though audit writes one."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("<p>someone's report</p>")
    before = _tree(out)
    assert _audit(out) == 2
    assert "report.html" in capsys.readouterr().err
    assert _tree(out) == before


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    (["--model", "nosuchpkg.mod:fn"], "cannot import module 'nosuchpkg.mod'"),
    (["--model", "tinymod:nothing"], "has no 'nothing'"),
    (["--model", "tinymod:broken"], "model factory 'tinymod:broken' raised RuntimeError: weights server unreachable"),
    (["--model", "lenet_sigmoid", "--bn", "train"], "bn_train on lenet_sigmoid_pack, which has no BatchNorm"),
    (["--batch-sizes", "0"], "batch_sizes=[0] (valid: positive integers)"),
    (["--batch-sizes", "1,x"], "--batch-sizes '1,x': give comma-separated whole numbers"),
    (["--batch-sizes", "11"], "batch size 11 needs distinct labels"),
    (["--stats", "bogus"], "stats=['bogus'] (valid: none, naive, exact, proxy)"),
    (["--bn", "frozen"], "bn=['frozen']"),
    (["--updates", "fedavg0"], "updates=['fedavg0']"),
    (["--threshold", "2"], "max_ssim=2.0 (valid: None, or a number in [-1, 1])"),
    (["--rule", "bs>=8"], "--rule 'bs>=8': write WHERE:MAX_SSIM"),
    (["--rule", "bs>=8:high"], "--rule 'bs>=8:high': write WHERE:MAX_SSIM"),
    (["--profile", "paper", "--device", "cpu"], "profile 'paper' needs a GPU"),
]


@pytest.mark.parametrize(("extra", "expected"), [pytest.param(e, x, id=" ".join(e)) for e, x in BAD_INPUT])
def test_audit_bad_input_exits_2_before_compute(extra: list[str], expected: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str], no_compute: list[str]) -> None:
    out = tmp_path / "out"
    assert _audit(out, *extra) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("giacheck: error: ") and expected in captured.err, captured.err
    assert not out.exists(), "nothing is written for bad input"
    assert no_compute == []


@pytest.mark.parametrize("extra", [["--device", "nosuchdevice"], ["--control", "nonsense"],
                                   ["--control", "lenet_sigmoid-16-bn_train-bs1-stats_none"]],
                         ids=["device", "malformed_control", "invalid_control"])
def test_audit_bad_device_or_control_exits_2_before_compute(extra: list[str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           no_compute: list[str]) -> None:
    out = tmp_path / "out"
    code = _audit(out, *extra)
    assert no_compute == [] and code == 2
    assert not out.exists()


@pytest.mark.parametrize(("rule", "expected"), [("bn>train:0.1", "bn takes = or !="),
                                                ("size>=8:0.1", "cannot read condition 'size>=8'"),
                                                ("bs>=8:2", "max_ssim=2.0")])
def test_audit_bad_rule_keeps_the_precise_message(rule: str, expected: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str], no_compute: list[str]) -> None:
    assert _audit(tmp_path / "out", "--rule", rule) == 2
    assert expected in capsys.readouterr().err


def test_audit_error_is_a_giacheck_error_in_the_api(tmp_path: Path, no_compute: list[str]) -> None:
    pack = Pack(name="tiny_broken", model="tinymod:broken")
    with pytest.raises(GiacheckError, match="weights server unreachable"):
        run_audit(pack, profile="smoke", device="cpu", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ init-pack
def test_init_pack_refuses_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    before = _tree(folder)
    assert main(["init-pack", str(folder), *MODEL]) == 2
    captured = capsys.readouterr()
    assert "holds notes.txt" in captured.err and "nothing was written" in captured.err and captured.out == ""
    assert _tree(folder) == before
    as_file = tmp_path / "pack.txt"
    as_file.write_text("a file")
    assert main(["init-pack", str(as_file), *MODEL]) == 2
    assert "is a file" in capsys.readouterr().err and as_file.read_text() == "a file"


@pytest.mark.parametrize(("extra", "expected"), [
    (["--model", "nosuchpkg.mod:fn"], "cannot import module 'nosuchpkg.mod'"),
    (["--model", "tinymod:broken"], "RuntimeError: weights server unreachable"),
    (["--batch-sizes", "0"], "batch_sizes=[0]"),
    (["--bn", "eval", "--stats", "exact"], "no applicable configuration"),
])
@pytest.mark.parametrize("exists", [False, True], ids=["new", "empty"])
def test_init_pack_bad_pack_writes_nothing(extra: list[str], expected: str, exists: bool, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pack"
    if exists:
        folder.mkdir()
    assert main(["init-pack", str(folder), *MODEL, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("giacheck: error: ") and expected in captured.err, captured.err
    assert captured.out == ""
    assert folder.is_dir() == exists and (not exists or not any(folder.iterdir()))


def test_init_pack_into_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pack"
    folder.mkdir()
    assert main(["init-pack", str(folder), *MODEL, "--bn", "train,eval", "--stats", "none,exact"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "baselines", "test_privacy_pack.py"]
    module = (folder / "test_privacy_pack.py").read_text()
    compile(module, "test_privacy_pack.py", "exec")
    assert "model='tinymod:tiny_cnn'" in module and "input_size=16" in module
    readme = (folder / "README.md").read_text()
    assert f"`{TRAIN}`" in readme and "Not applicable: `tiny_cnn-16-bn_eval-bs1-stats_exact`" in readme
    assert "next: pytest" in capsys.readouterr().out
