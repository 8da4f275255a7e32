"""DATABASE_URL's connection options (echoflow/env.py)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import redis

from echoflow.env import ConfigError, check_redis_url, database_from_url, redis_tls_options

ROOT = Path(__file__).resolve().parent.parent


def _options(url: str) -> dict[str, object]:
    options = database_from_url("DATABASE_URL", url, base_dir=ROOT)["OPTIONS"]
    assert isinstance(options, dict)
    return options


def test_query_parameters_become_connection_options_and_statements_are_prepared_after_5_runs() -> None:
    assert _options("postgres://u@db/echoflow?sslmode=require") == {"sslmode": "require", "prepare_threshold": 5}


@pytest.mark.postgres
def test_a_url_without_a_host_and_a_host_option_connects_over_the_unix_socket() -> None:
    import psycopg

    url = "postgres://postgres@/postgres?host=/var/run/postgresql"
    settings = database_from_url("DATABASE_URL", url, base_dir=ROOT)
    assert settings["HOST"] == "" and settings["OPTIONS"] == {"host": "/var/run/postgresql", "prepare_threshold": 5}
    if not Path("/var/run/postgresql").is_dir() and not os.environ.get("ECHOFLOW_REQUIRE_SERVICES"):
        pytest.skip("no PostgreSQL socket directory at /var/run/postgresql on this machine")
    with psycopg.connect(dbname=settings["NAME"], user=settings["USER"], **settings["OPTIONS"]) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)  # not over TCP


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("20", 20), ("none", None), ("None", None), ("", None)])
def test_prepare_threshold_can_be_set_or_turned_off(value: str, expected: int | None) -> None:
    assert _options(f"postgres://u@db/echoflow?prepare_threshold={value}")["prepare_threshold"] == expected


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_a_bad_prepare_threshold_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: prepare_threshold must be a whole number >= 0 or none"):
        database_from_url("DATABASE_URL", f"postgres://u@db/echoflow?prepare_threshold={value}", base_dir=ROOT)


def test_a_rediss_broker_verifies_the_certificate_unless_the_url_says_otherwise(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert redis_tls_options("REDIS_URL", "redis://h:6379/0") is None
    assert redis_tls_options("REDIS_URL", "rediss://h:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert redis_tls_options("REDIS_URL", "rediss://h:6380/0?ssl_cert_reqs=none") == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert redis_tls_options("REDIS_URL", f"rediss://h:6380/0?ssl_cert_reqs=optional&ssl_ca_certs={ca}") == {
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": str(ca),
    }


MUST = "REDIS_URL: ssl_cert_reqs must be required, optional or none (or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE)"


@pytest.mark.parametrize(
    ("spelling", "short", "mode"),
    [
        ("CERT_REQUIRED", "required", ssl.CERT_REQUIRED),
        ("cert_optional", "optional", ssl.CERT_OPTIONAL),
        ("CERT_NONE", "none", ssl.CERT_NONE),
        ("Required", "required", ssl.CERT_REQUIRED),
    ],
)
def test_celerys_spelling_of_ssl_cert_reqs_is_taken_and_rewritten_for_redis_py(
    spelling: str, short: str, mode: ssl.VerifyMode, tmp_path: Path
) -> None:
    ca = tmp_path / "my ca.pem"
    ca.write_text("")
    url = f"rediss://:p%40ss@h:6380/0?ssl_ca_certs={ca}&ssl_cert_reqs={spelling}"
    assert redis_tls_options("REDIS_URL", url) == {"ssl_cert_reqs": mode, "ssl_ca_certs": str(ca)}
    checked = check_redis_url("REDIS_URL", url)
    assert checked == f"rediss://:p%40ss@h:6380/0?ssl_ca_certs={str(ca).replace(' ', '%20')}&ssl_cert_reqs={short}"
    # redis-py, which serves the event stream, the cache and the health check, takes the rewritten URL as it is.
    connection = redis.Redis.from_url(checked).connection_pool.make_connection()
    assert (connection.cert_reqs, connection.ca_certs, connection.password) == (mode, str(ca), "p@ss")


def test_a_url_without_tls_options_is_left_as_it_is() -> None:
    for url in ("redis://h:6379/0?health_check_interval=5", "rediss://h:6380/0", "unix:///run/redis.sock?db=2"):
        assert check_redis_url("REDIS_URL", url) == url


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl_cert_reqs=CERT_NOTHING", f"{MUST}; got 'CERT_NOTHING'"),
        ("ssl_cert_reqs=", f"{MUST}; got ''"),
        ("ssl_cert_reqs=0", f"{MUST}; got '0'"),
        ("ssl_ca_certs=/nonexistent/ca.pem", "REDIS_URL: ssl_ca_certs '/nonexistent/ca.pem' is not a file"),
        ("ssl_certfile=/nonexistent/c.pem", "REDIS_URL: ssl_certfile '/nonexistent/c.pem' is not a file"),
    ],
)
def test_a_tls_option_that_would_fall_back_to_no_verification_is_refused_by_name(query: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_redis_url("REDIS_URL", f"rediss://h:6380/0?{query}")
    assert str(raised.value) == message
