"""Hooks giacheck calls, for other plugins (pytest-html, dashboards) to implement in a conftest or a plugin.

Registered with ``pluginmanager.add_hookspecs``; an implementation may take any subset of the arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from giacheck.records import CaseRecord


@pytest.hookspec
def pytest_giacheck_case_result(record: CaseRecord, report: pytest.TestReport, config: pytest.Config) -> None:
    """Called on the controller (under xdist: the controller, never a worker) once per finished case, as soon as
    the report of its test arrives and after its line was appended to ``results.jsonl``.

    Args:
        record: the case's :class:`giacheck.records.CaseRecord` (frozen): suite, case id, profile, claim kind and
            verdict, message, scores, attack identity, baseline check, wall time, origin ("computed" or "another
            worker"), the test's node id and outcome, and the full ``result`` dict; ``record.to_json()`` is
            exactly the line written to ``results.jsonl``.
        report: the test's ``call`` report that carried the record (one test may carry several cases).
        config: the pytest config of the run.
    """
