"""Builds the one native module, clarion._fanout (the fan-out loop); everything else is in pyproject.toml.

Optional by default: without a C compiler the install still succeeds and Clarion fans out in
Python. ``CLARION_REQUIRE_NATIVE=1`` (set by scripts/setup.sh, so in CI) makes a failed build an
install error, rather than a test that fails later for want of the native loop.
"""

import os

from setuptools import Extension, setup

required = os.environ.get("CLARION_REQUIRE_NATIVE", "0")
if required not in ("0", "1"):
    raise SystemExit(f"CLARION_REQUIRE_NATIVE must be 0 or 1, not {required[:20]!r}")

setup(
    ext_modules=[
        Extension("clarion._fanout", ["src/clarion/_fanout.c"], optional=required == "0", extra_compile_args=["-O2"]),
    ]
)
