"""The shipped conformance cases, checked without a kernel: every file loads strictly against its
topology, and wherever a case carries a hand-written ``expect`` the oracle agrees with it (the
hand tables are the oracle's own test)."""

from __future__ import annotations

import glob
import os

import pytest

from harness.conformance.case import load_case, plan

CASES_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "cases", "conformance")
CASE_FILES = sorted(glob.glob(os.path.join(CASES_DIR, "*.yaml")))
DEVIATION_FILES = sorted(glob.glob(os.path.join(CASES_DIR, "deviations", "*.yaml")))


def _id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def test_enough_cases_ship():
    assert len(CASE_FILES) >= 25
    hand = [s for p in CASE_FILES for s in load_case(p, check=False).steps if s.expect is not None]
    assert len(hand) >= 10, "several steps must carry a hand-written expect"


@pytest.mark.parametrize("path", CASE_FILES + DEVIATION_FILES, ids=_id)
def test_case_loads_and_oracle_agrees_with_hand_tables(path):
    case = load_case(path)
    for planned in plan(case):
        d = planned.oracle_vs_hand
        if d is not None:
            assert d.ok, f"{_id(path)} step {planned.step.index} ({planned.step.description}): oracle vs hand\n" + d.report()
        counts = planned.expected.counts()
        assert counts["unknown"] == 0


def test_case_names_are_unique():
    names = [load_case(p, check=False).name for p in CASE_FILES + DEVIATION_FILES]
    assert len(names) == len(set(names))
