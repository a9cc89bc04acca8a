"""Autobahn group 6 (UTF-8 handling) against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.cases import GROUPS
from conformance.wire import Case, run

CASES = GROUPS["utf8"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_utf8_case_is_answered_as_the_table_says(server: Any, case: Case) -> None:
    await run(server, case)
