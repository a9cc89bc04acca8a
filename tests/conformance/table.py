"""The case-by-case table in docs/protocol-coverage.md, rendered from the cases themselves.

Print it with ``cd tests && ../.venv/bin/python -m conformance.table``; ``test_table.py``
fails while the docs hold anything else.
"""

from __future__ import annotations

from conformance.cases import GROUPS
from conformance.wire import Case

MODULES = {
    "framing": "test_framing",
    "pings": "test_framing",
    "reserved_bits": "test_framing",
    "opcodes": "test_framing",
    "fragmentation": "test_fragmentation",
    "utf8": "test_utf8",
    "closing": "test_closing",
    "limits": "test_limits",
}
BEGIN = "<!-- conformance table: rendered by tests/conformance/table.py -->"
END = "<!-- end of conformance table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _sent(case: Case) -> str:
    text = case.sent
    head, sep, data = text.partition(": 0x")
    if sep and len(data) > 40:
        text = f"{head}: 0x{data[:32]}… ({len(data) // 2} bytes)"
    return text


def render() -> str:
    lines = [
        BEGIN,
        "",
        "| case | sent | Autobahn expects | Clarion | test |",
        "|---|---|---|---|---|",
    ]
    for group, cases in GROUPS.items():
        module = MODULES[group]
        for case in cases:
            test = f"`{module}[{case.id}]`"
            row = [case.id, _sent(case), case.autobahn, case.clarion(), test]
            lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    lines += ["", END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
