"""TLS end to end: https with trustme certificates, client certificates, an encrypted key, the
--ssl-* options, and bad files refused with one line and exit 1 before anything binds."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from shardcorn.testing import serve_in_thread, serve_process, shardcorn_command
from tests.parity.conftest import TLSFiles
from tests.parity.helpers import (
    KEY_PASSWORD,
    error_lines,
    run_shardcorn,
    scope_app,
    spawn,
    wait_ready,
)


def tls_settings(tls: TLSFiles, **extra: object) -> dict[str, object]:
    return {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key), **extra}


def handshake(
    port: int, context: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> tuple[str | None, str | None, tuple[str, str, int] | None]:
    """Connect, finish the TLS handshake; return (version, ALPN protocol, cipher)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls_sock,
    ):
        return tls_sock.version(), tls_sock.selected_alpn_protocol(), tls_sock.cipher()


def test_https_request_has_scheme_https(tls: TLSFiles) -> None:
    with serve_in_thread(scope_app, **tls_settings(tls)) as server:
        assert server.url.startswith("https://")
        with httpx.Client(verify=tls.client_context()) as client:
            response = client.get(server.url + "/secure")
    assert response.status_code == 200
    assert response.json()["scheme"] == "https"


def test_a_large_body_over_tls_arrives_whole(tls: TLSFiles) -> None:
    """Plain sockets let the app read a large body straight from the socket; over TLS the
    bytes there are records, so the body must come through the TLS layer intact."""
    body = os.urandom(3 * 1024 * 1024 + 11)

    async def digest(scope: dict[str, object], receive: Any, send: Any) -> None:
        hasher = hashlib.sha256()
        more = True
        while more:
            message = await receive()
            hasher.update(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": hasher.hexdigest().encode()})

    with (
        serve_in_thread(digest, lifespan="off", **tls_settings(tls)) as server,
        httpx.Client(verify=tls.client_context(), timeout=30) as client,
    ):
        response = client.post(server.url + "/", content=body)
    assert response.status_code == 200
    assert response.text == hashlib.sha256(body).hexdigest()


def test_websocket_over_tls_has_scheme_wss(tls: TLSFiles) -> None:
    with (
        serve_in_thread(scope_app, **tls_settings(tls)) as server,
        connect(f"wss://127.0.0.1:{server.port}/ws", ssl=tls.client_context()) as websocket,
    ):
        scope = json.loads(websocket.recv(timeout=5))
    assert scope["scheme"] == "wss"


def test_plain_http_to_a_tls_port_gets_no_answer(tls: TLSFiles) -> None:
    with (
        serve_in_thread(scope_app, **tls_settings(tls)) as server,
        httpx.Client() as client,
        pytest.raises(httpx.HTTPError),
    ):
        client.get(f"http://127.0.0.1:{server.port}/")


def test_alpn_settles_on_http11(tls: TLSFiles) -> None:
    context = tls.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with serve_in_thread(scope_app, **tls_settings(tls)) as server:
        _, alpn, _ = handshake(server.port, context)
    assert alpn == "http/1.1"


def test_encrypted_key_with_password(tls: TLSFiles) -> None:
    settings = tls_settings(
        tls, ssl_keyfile=str(tls.encrypted_key), ssl_keyfile_password=KEY_PASSWORD
    )
    with (
        serve_in_thread(scope_app, **settings) as server,
        httpx.Client(verify=tls.client_context()) as client,
    ):
        assert client.get(server.url + "/").status_code == 200


def test_client_certificate_required(tls: TLSFiles) -> None:
    settings = tls_settings(tls, ssl_cert_reqs=2, ssl_ca_certs=str(tls.ca_file))
    with serve_in_thread(scope_app, **settings) as server:
        with httpx.Client(verify=tls.client_context(with_certificate=True)) as client:
            assert client.get(server.url + "/").status_code == 200
        # Without a certificate, or with one from a CA the server does not know, the
        # handshake fails: TLS 1.3 reports it at the first read, so a request is needed.
        rogue = tls.client_context()
        rogue.load_cert_chain(str(tls.rogue_client_cert))
        for context in (tls.client_context(), rogue):
            with httpx.Client(verify=context) as client, pytest.raises(httpx.HTTPError):
                client.get(server.url + "/")


def test_client_certificate_optional(tls: TLSFiles) -> None:
    settings = tls_settings(tls, ssl_cert_reqs=1, ssl_ca_certs=str(tls.ca_file))
    with serve_in_thread(scope_app, **settings) as server:
        for context in (tls.client_context(), tls.client_context(with_certificate=True)):
            with httpx.Client(verify=context) as client:
                assert client.get(server.url + "/").status_code == 200


def test_ssl_version_pins_tls12(tls: TLSFiles) -> None:
    with serve_in_thread(scope_app, **tls_settings(tls, ssl_version=5)) as server:
        version, _, _ = handshake(server.port, tls.client_context())
        assert version == "TLSv1.2"
        only_13 = tls.client_context()
        only_13.minimum_version = ssl.TLSVersion.TLSv1_3
        with pytest.raises(ssl.SSLError):
            handshake(server.port, only_13)


def test_ssl_ciphers_limit_the_tls12_suites(tls: TLSFiles) -> None:
    settings = tls_settings(tls, ssl_ciphers="ECDHE+CHACHA20")
    client = tls.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 suites are not set_ciphers'
    with serve_in_thread(scope_app, **settings) as server:
        _, _, cipher = handshake(server.port, client)
    assert cipher is not None
    assert "CHACHA20" in cipher[0]


def test_tls_from_the_command_line(tls: TLSFiles, app_dir: Path) -> None:
    args = [
        "scopeapp:app", "--app-dir", str(app_dir), "--port", "0",
        "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.encrypted_key),
        "--ssl-keyfile-password", KEY_PASSWORD,
        "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(tls.ca_file),
    ]  # fmt: skip
    with spawn(shardcorn_command(args)) as server:
        wait_ready(server)
        assert server.scheme == "https"
        with httpx.Client(verify=tls.client_context(with_certificate=True)) as client:
            response = client.get(f"https://127.0.0.1:{server.port}/x")
    assert json.loads(response.text)["scheme"] == "https"


# -- refused before binding: one line, exit 1 ----------------------------------------------
def _refused(args: list[str]) -> str:
    result = run_shardcorn(["shardcorn.demo:app", "--port", "0", *args])
    lines = error_lines(result)
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "running on" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("shards", ["1", "2"])
def test_missing_certificate_file(tls: TLSFiles, tmp_path: Path, shards: str) -> None:
    # With two shards too: the check runs before the launcher picks a mode.
    missing = tmp_path / "nope.pem"
    line = _refused(
        ["--workers", shards, "--ssl-certfile", str(missing), "--ssl-keyfile", str(tls.key)]
    )
    assert f"--ssl-certfile: file not found: {missing}" in line


def test_garbage_key_file(tls: TLSFiles) -> None:
    line = _refused(["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.garbage)])
    assert f"--ssl-keyfile: no PEM private key in {tls.garbage}" in line


def test_garbage_certificate_file(tls: TLSFiles) -> None:
    line = _refused(["--ssl-certfile", str(tls.garbage), "--ssl-keyfile", str(tls.key)])
    assert "--ssl-certfile: no PEM certificate" in line


def test_key_of_another_certificate(tls: TLSFiles) -> None:
    line = _refused(["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.other_key)])
    assert "is not the key of --ssl-certfile" in line


def test_wrong_key_password(tls: TLSFiles) -> None:
    line = _refused([
        "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.encrypted_key),
        "--ssl-keyfile-password", "wrong",
    ])  # fmt: skip
    assert "--ssl-keyfile-password: wrong password" in line


def test_encrypted_key_without_password_does_not_prompt(tls: TLSFiles) -> None:
    # OpenSSL would ask on the terminal and block; run_shardcorn's stdin is /dev/null and
    # its timeout would catch a hang.
    line = _refused(["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.encrypted_key)])
    assert "is encrypted: give its --ssl-keyfile-password" in line


def test_client_certificates_without_ca(tls: TLSFiles) -> None:
    line = _refused([
        "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key), "--ssl-cert-reqs", "2",
    ])  # fmt: skip
    assert "--ssl-cert-reqs 2 needs --ssl-ca-certs" in line


def test_unusable_cipher_list(tls: TLSFiles) -> None:
    line = _refused([
        "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key),
        "--ssl-ciphers", "NO-SUCH-CIPHER",
    ])  # fmt: skip
    assert "--ssl-ciphers 'NO-SUCH-CIPHER': no usable cipher" in line


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--ssl-version", "16", "--ssl-version 16: a server can use"),
        ("--ssl-cert-reqs", "3", "--ssl-cert-reqs 3: expected 0, 1 or 2"),
    ],
)
def test_bad_tls_settings_exit_2(tls: TLSFiles, option: str, value: str, message: str) -> None:
    result = run_shardcorn([
        "shardcorn.demo:app", "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key),
        option, value,
    ])  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("shards", [["--shards", "1"], ["--shards", "2", "--shard-mode", "thread"]])
def test_a_pinned_legacy_version_is_warned_about_once(tls: TLSFiles, shards: list[str]) -> None:
    """Every shard builds its own TLS context; the warning is the launcher's, said once."""
    args = [
        *("shardcorn.demo:app", "--port", "0", "--lifespan", "off"),
        *("--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key), "--ssl-version", "4"),
        *shards,
    ]
    with serve_process(args) as server:
        assert server.scheme == "https"
        log = server.log
    assert log.count("--ssl-version 4 pins TLSv1_1, which is deprecated") == 1, log
