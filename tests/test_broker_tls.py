"""A ``rediss://`` URL against a real redis-server speaking TLS with a certificate of a test CA: the broker verifies
the server as the event stream's client does, and works through EchoFlow's transport once it is told the CA.

Before, kombu connected to such a server without checking its certificate (logging "defaulting to insecure SSL
behaviour") while redis-py, for the events and the health check, refused it: one URL, two meanings."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from echoflow.private_redis import free_port
from tests.conftest import embedded_child

pytestmark = pytest.mark.redis


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, CA file) of a redis-server with TLS only, its certificate for localhost signed by a throw-away CA."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        pytest.fail("this test needs redis-server and openssl (apt-get install redis-server openssl)")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=EchoFlow test CA", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
             "/CN=localhost", cwd=d)  # fmt: skip
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "server.crt", "-days", "2", "-extfile", "ext", cwd=d)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", "server.crt",
         "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(d)],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis.from_url(f"rediss://localhost:{port}/0?ssl_ca_certs={d / 'ca.crt'}", socket_timeout=1)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the TLS redis-server did not start (is this redis-server built with TLS?)")
                time.sleep(0.1)
        yield port, d / "ca.crt"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


_CHILD = textwrap.dedent(
    """
    import json, warnings

    import django

    django.setup()
    from django.conf import settings
    from kombu.simple import SimpleQueue

    from echoflow.broker import RedisTransport
    from echoflow.celery import app
    from echoflow.observability.health import broker_check

    use_ssl = getattr(settings, "CELERY_BROKER_USE_SSL", None) or {}
    got = {"use_ssl": {k: getattr(v, "name", str(v)) for k, v in use_ssl.items()}}
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            got["transport"] = type(conn.transport).__name__
            got["ours"] = isinstance(conn.transport, RedisTransport)
            queue = SimpleQueue(conn.default_channel, "echoflow.tls-test")
            queue.put({"hello": "over TLS"})
            message = queue.get(timeout=5)
            got["message"] = message.payload
            message.ack()
            queue.close()
        got["broker"] = "ok"
    except Exception as exc:
        got["broker"] = f"{type(exc).__name__}: {exc}"
    got["health"] = list(broker_check())
    print(json.dumps(got))
    """
)


def _child(url: str, tmp_path: Path) -> dict[str, object]:
    result = embedded_child(_CHILD, tmp_path, timeout=120, REDIS_URL=url)
    assert isinstance(result, dict)
    return result


def test_the_broker_refuses_a_redis_whose_certificate_it_cannot_verify(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_redis
    got = _child(f"rediss://localhost:{port}/0", tmp_path)
    assert got["use_ssl"] == {"ssl_cert_reqs": "CERT_REQUIRED"}
    assert "CERTIFICATE_VERIFY_FAILED" in str(got["broker"])
    health = got["health"]
    assert isinstance(health, list) and health[0] is False and "CERTIFICATE_VERIFY_FAILED" in health[1]


def test_given_the_ca_the_broker_carries_messages_over_tls_through_echoflows_transport(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = tls_redis
    got = _child(f"rediss://localhost:{port}/0?ssl_ca_certs={ca}", tmp_path)
    assert got["broker"] == "ok"
    assert got["ours"] is True
    assert got["message"] == {"hello": "over TLS"}
    assert got["health"] == [True, "Redis answers"]


def test_ssl_cert_reqs_none_turns_verification_off_for_broker_and_health_check_alike(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_redis
    got = _child(f"rediss://localhost:{port}/0?ssl_cert_reqs=none", tmp_path)
    assert got["use_ssl"] == {"ssl_cert_reqs": "CERT_NONE"}
    assert got["broker"] == "ok"
    assert got["health"] == [True, "Redis answers"]


def test_celerys_spelling_cert_required_verifies_for_the_broker_and_the_health_check_alike(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    # Celery's documentation writes ssl_cert_reqs=CERT_REQUIRED; redis-py (the health check, the event stream) only
    # takes "required". Both clients get it, verified against the given CA.
    port, ca = tls_redis
    got = _child(f"rediss://localhost:{port}/0?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs={ca}", tmp_path)
    assert got["use_ssl"] == {"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": str(ca)}
    assert got["broker"] == "ok"
    assert got["health"] == [True, "Redis answers"]
