"""The dashboard's sampling arithmetic: quantiles of what a histogram observed between two readings."""

from __future__ import annotations

import math

from clarion.server.dashboard import quantile

BEFORE = {0.001: 10.0, 0.01: 10.0, 0.1: 10.0, math.inf: 10.0}


def test_nothing_observed_in_the_interval_is_no_quantile() -> None:
    assert quantile(0.5, BEFORE, BEFORE) is None
    assert quantile(0.5, BEFORE, None) is None
    assert quantile(0.5, None, BEFORE) is None


def test_quantiles_interpolate_within_the_bucket_of_the_interval() -> None:
    # 100 observations since BEFORE: 50 up to 1 ms, 50 between 1 and 10 ms.
    now = {0.001: 60.0, 0.01: 110.0, 0.1: 110.0, math.inf: 110.0}
    assert quantile(0.5, now, BEFORE) == 0.001
    p99 = quantile(0.99, now, BEFORE)
    assert p99 is not None and math.isclose(p99, 0.001 + 0.009 * (49 / 50))


def test_observations_past_the_last_bound_report_that_bound() -> None:
    now = {0.001: 10.0, 0.01: 10.0, 0.1: 10.0, math.inf: 20.0}
    assert quantile(0.99, now, BEFORE) == 0.1
