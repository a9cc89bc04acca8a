"""Builds the one native module, clarion._fanout (the fan-out loop); everything else is in pyproject.toml.

Optional: without a C compiler the install still succeeds and Clarion fans out in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("clarion._fanout", ["src/clarion/_fanout.c"], optional=True, extra_compile_args=["-O2"]),
    ]
)
