"""docs/protocol-coverage.md holds the conformance table exactly as the cases render it."""

from __future__ import annotations

from conformance.cases import GROUPS
from conformance.table import BEGIN, END, render
from conftest import ROOT


def test_the_docs_table_is_the_one_the_cases_render() -> None:
    docs = (ROOT / "docs" / "protocol-coverage.md").read_text()
    assert BEGIN in docs and END in docs
    start = docs.index(BEGIN)
    table = docs[start : docs.index(END, start) + len(END)]
    assert table == render(), "run: cd tests && ../.venv/bin/python -m conformance.table"


def test_every_case_id_is_unique() -> None:
    ids = [case.id for cases in GROUPS.values() for case in cases]
    assert len(ids) == len(set(ids))
