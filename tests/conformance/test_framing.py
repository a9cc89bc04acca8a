"""Autobahn groups 1-4 (framing, pings and pongs, reserved bits, opcodes) against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.cases import GROUPS
from conformance.wire import Case, run

CASES = GROUPS["framing"] + GROUPS["pings"] + GROUPS["reserved_bits"] + GROUPS["opcodes"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_framing_case_is_answered_as_the_table_says(server: Any, case: Case) -> None:
    await run(server, case)
