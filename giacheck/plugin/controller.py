"""The controller's side (the only process under xdist that writes): case records from test reports, the
``results.jsonl`` journal, baselines under ``--giacheck-update[-all]``, ``results.json``, the summary table and
the run's shared-results folder for xdist workers.

The artifacts folder follows the rule of every output folder (:mod:`giacheck.outputs`): it is refused at configure
time when it holds anything giacheck did not write, and what the plugin writes there (``results.json``,
``results.jsonl``, ``<profile>/``) is listed in its manifest as written by ``pytest``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from giacheck.errors import BaselineError, GiacheckError
from giacheck.jsonio import Journal
from giacheck.outputs import check_output_folder, claim_outputs
from giacheck.plugin.options import given, option, updating

if TYPE_CHECKING:
    from giacheck.records import CaseRecord

__all__ = ["CONTROLLER", "PROPERTY", "WRITER", "Controller"]

WRITER = "pytest"  # the writer named in the artifacts folder's manifest
RESULTS_JSON, RESULTS_JSONL = "results.json", "results.jsonl"  # as giacheck.records names them (not imported here)
PROPERTY = "giacheck"  # user_properties key carrying one case's record (CaseRecord.to_json() as JSON text)
CONTROLLER = pytest.StashKey["Controller"]()


class Controller:
    """Collects case records from reports (local or from xdist workers), writes results and baselines.

    Heavy imports (records, baselines) wait for the first record. Nothing is created on disk until a record
    arrives (the artifacts folder, with its manifest) or a worker is configured (the shared folder, in the system
    temp folder, removed at the end of the run).

    Raises:
        pytest.UsageError: the artifacts folder holds files giacheck did not write (named); nothing is touched.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: list[CaseRecord] = []
        self.errors: list[str] = []
        self.folder = Path(option(config, "artifacts")).expanduser()
        self._names = [RESULTS_JSON, RESULTS_JSONL, option(config, "profile")]  # what this run may write there
        self._claimed = False
        try:
            check_output_folder(self.folder, command="giacheck",
                                consequence="it was left untouched and no test was run")
        except GiacheckError as exc:
            reason = str(exc).removeprefix(f"--out {self.folder}: ")  # the folder is named by given() instead
            raise pytest.UsageError(f"{given(config, 'artifacts')}: the plugin writes {', '.join(self._names[:2])} "
                                    f"and {self._names[2]}/ there; {reason}") from None
        self._before = {name for name in self._names if (self.folder / name).exists()}
        self.journal = Journal(self.folder / RESULTS_JSONL, fresh=True)
        self._shared: Path | None = None

    def _claim(self) -> None:
        """List this run's outputs in the artifacts folder's manifest (once; it makes the folder)."""
        if not self._claimed:
            claim_outputs(self.folder, WRITER, self._names)
            self._claimed = True

    def shared_folder(self) -> Path:
        """The run's folder of finished cases for xdist workers: private (0700), made on the first call."""
        if self._shared is None:
            self._shared = Path(tempfile.mkdtemp(prefix="giacheck-shared-"))
        return self._shared

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before other plugins see the report: under an update flag, a baseline that could not be written fails
        the test (the report says why), so that the terminal, the exit status and junit all count it."""
        if report.when != "call":  # teardown reports carry the same user_properties again
            return
        records = [value for name, value in report.user_properties if name == PROPERTY]
        if not records:
            return
        from giacheck.records import CaseRecord  # here: most reports carry no record

        parsed = [CaseRecord.from_json(value, where=f"record of {report.nodeid}") for value in records]
        if updating(self.config):
            problems = [p for p in (self._write_baseline(r) for r in parsed) if p]
            if problems:
                _fail_report(report, problems)
        self._claim()
        for record in (r.with_outcome(report.outcome) for r in parsed):
            self.rows.append(record)
            self.journal.append(record.to_json())  # at once: whatever happens to workers later, it is on disk
            self.config.hook.pytest_giacheck_case_result(record=record, report=report, config=self.config)

    def _write_baseline(self, record: CaseRecord) -> str | None:
        """Write the case's baseline; the reason it was not written (naming the path), or None."""
        from giacheck.baselines import BaselineStore

        store = BaselineStore(record.baselines_root or option(self.config, "baselines"), record.profile)
        try:
            store.write(record.suite, record.case_id, record.result)
        except BaselineError as exc:
            problem = str(exc)
        except OSError as exc:
            problem = (f"{record.case_id}: baseline not written at {store.path(record.suite, record.case_id)} "
                       f"({type(exc).__name__}: {exc.strerror or exc}); a file already there is as it was")
        else:
            return None
        self.errors.append(problem)
        return problem

    @pytest.hookimpl
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._shared is not None:
            shutil.rmtree(self._shared, ignore_errors=True)
            self._shared = None

    def _unique(self) -> dict[tuple[str, str], CaseRecord]:
        return {(r.suite, r.case_id): r for r in self.rows}

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if any((self.folder / n).exists() and n not in self._before for n in self._names):  # a case's PNG, say,
            self._claim()  # from a test that never reported its record
        if self.rows:
            from giacheck.records import write_results

            write_results(self.rows, self.folder / RESULTS_JSON, profile=option(self.config, "profile"))

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("giacheck summary")
        unique = self._unique()
        tr.write_line(f"{'case id':52} {'claim':11} {'k×s':>3} {'SSIM*':>6} {'rank':>7} {'z':>5} {'chance':>6} "
                      f"{'why':>5} {'baseline':>16} {'verdict':>19} {'wall s':>7}")
        for row in unique.values():
            tr.write_line(_summary_line(row))
        tr.write_line("* the most leaking image of the challenge set (images × seeds): its SSIM, its re-identification "
                      "rank in the held-out pool, z against the pool, the pool's chance level (95th percentile); why "
                      "a negative failed: atk = attack-limited (stopped above the truth's objective), info = "
                      "information-limited (reached it)")
        tr.write_line(f"results: {self.folder / RESULTS_JSON}")
        self._report_orphans(tr, unique)
        for error in self.errors:
            tr.write_line(f"baseline not written: {error}", red=True)

    def _report_orphans(self, tr: Any, unique: dict[tuple[str, str], CaseRecord]) -> None:
        """Baselines of the suites run whose case did not run: orphaned if the case is gone (or deselected)."""
        from giacheck.baselines import BaselineStore

        roots = {r.suite: r.baselines_root or option(self.config, "baselines") for r in unique.values()}
        for suite in sorted(roots):
            store = BaselineStore(roots[suite], option(self.config, "profile"))
            for path in store.orphans(suite, [c for s, c in unique if s == suite]):
                tr.write_line(f"baseline without a case in this run (orphaned, or deselected): {path}")


def _fail_report(report: pytest.TestReport, problems: list[str]) -> None:
    """Turn ``report`` into a failure that adds ``problems`` to what it already says."""
    before = report.longreprtext if report.failed else ""
    report.outcome = "failed"
    report.longrepr = "\n".join([before, *problems] if before else problems)


def _summary_line(row: CaseRecord) -> str:
    """One row of the summary table."""
    wall = f"{row.wall_s:7.1f}" if row.wall_s is not None else f"{'—':>7}"
    ev = row.evidence
    if ev is None:
        middle = f"{'—':>3} {row.scores.ssim_max:6.3f} {'—':>7} {'—':>5} {'—':>6} {'—':>5}"
    else:
        why = {"attack-limited": "atk", "information-limited": "info"}.get(ev.limitation, "?")
        middle = (f"{ev.trials:>3} {ev.worst_ssim:6.3f} {ev.shown_rank:>7} {ev.z:5.1f} {ev.chance_q95:6.3f} "
                  f"{why if ev.content != 'semantic' else 'leak':>5}")
    return (f"{row.case_id[:52]:52} {row.claim or '—':11} {middle} {row.shown_baseline:>16} "
            f"{row.shown_verdict:>19} {wall}")
