"""Reading a JUnit XML report, as the contract suites' pytest subprocesses write it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path


def outcomes(report: Path) -> Iterator[tuple[ET.Element, str]]:
    """Each test case of the report with its outcome: passed, failed, error or skipped."""
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
        yield case, outcome
