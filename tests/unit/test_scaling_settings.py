"""The scale-out settings: defaults, and each refused just past its bounds, naming its variable."""

from __future__ import annotations

import pytest

from clarion.server.config import ConfigError, load_settings

BOUNDS = [
    ("CLARION_REDIS_TIMEOUT", "redis_timeout", 2.0, ("0.05", "60"), ("0.04", "60.5", "0", "soon")),
    ("CLARION_REDIS_HEALTH_INTERVAL", "redis_health_interval", 1.0, ("0.1", "60"), ("0.09", "61", "-1")),
    ("CLARION_IDEMPOTENCY_TTL", "idempotency_ttl", 300.0, ("1", "86400"), ("0", "0.5", "86401")),
]


@pytest.mark.parametrize(("var", "name", "default", "good", "bad"), BOUNDS)
def test_a_scale_out_setting_has_its_default_takes_its_bounds_and_refuses_beyond_them(
    var: str, name: str, default: float, good: tuple[str, ...], bad: tuple[str, ...]
) -> None:
    assert getattr(load_settings(environ={}), name) == default
    for value in good:
        assert getattr(load_settings(environ={var: value}), name) == float(value)
    for value in bad:
        with pytest.raises(ConfigError, match=var):
            load_settings(environ={var: value})
