"""DATABASE_URL's connection options (echoflow/env.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoflow.env import ConfigError, database_from_url

ROOT = Path(__file__).resolve().parent.parent


def _options(url: str) -> dict[str, object]:
    options = database_from_url("DATABASE_URL", url, base_dir=ROOT)["OPTIONS"]
    assert isinstance(options, dict)
    return options


def test_query_parameters_become_connection_options_and_statements_are_prepared_after_5_runs() -> None:
    assert _options("postgres://u@db/echoflow?sslmode=require") == {"sslmode": "require", "prepare_threshold": 5}


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("20", 20), ("none", None), ("None", None), ("", None)])
def test_prepare_threshold_can_be_set_or_turned_off(value: str, expected: int | None) -> None:
    assert _options(f"postgres://u@db/echoflow?prepare_threshold={value}")["prepare_threshold"] == expected


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_a_bad_prepare_threshold_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: prepare_threshold must be a whole number >= 0 or none"):
        database_from_url("DATABASE_URL", f"postgres://u@db/echoflow?prepare_threshold={value}", base_dir=ROOT)
