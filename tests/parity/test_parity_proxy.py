"""--proxy-headers / --forwarded-allow-ips against a real server: X-Forwarded-For/-Proto/-Port
change client, scheme and server only when the peer is trusted; several hops are read from
the right; '*', CIDR ranges and the 'unix:' literal; FORWARDED_ALLOW_IPS as in uvicorn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from shardcorn.config import parse_trusted_hosts
from shardcorn.protocol.proxy import forwarded_client, split_host_port
from shardcorn.testing import serve_in_thread, shardcorn_command
from tests.parity.helpers import scope_app, spawn, wait_ready

FORWARDED = {
    "x-forwarded-for": "203.0.113.7",
    "x-forwarded-proto": "https",
    "x-forwarded-port": "8443",
}


def ask(url: str, headers: dict[str, str], transport: httpx.HTTPTransport | None = None) -> Any:
    with httpx.Client(transport=transport) as client:
        response = client.get(url + "/", headers=headers)
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "10.0.0.0/8, 127.0.0.1", "*"])
def test_trusted_peer_rewrites_client_scheme_and_port(allow: str) -> None:
    with serve_in_thread(scope_app, forwarded_allow_ips=allow) as server:
        scope = ask(server.url, FORWARDED)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["127.0.0.1", 8443]


@pytest.mark.parametrize(
    "settings",
    [
        {"forwarded_allow_ips": "10.0.0.1,192.168.0.0/16"},
        {"proxy_headers": False, "forwarded_allow_ips": "*"},
    ],
)
def test_untrusted_peer_or_proxy_headers_off_changes_nothing(settings: dict[str, Any]) -> None:
    with serve_in_thread(scope_app, **settings) as server:
        scope = ask(server.url, FORWARDED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["client"][1] != 0
    assert scope["scheme"] == "http"
    assert scope["server"] == ["127.0.0.1", server.port]


def test_several_hops_rightmost_untrusted_wins() -> None:
    # The client wrote a fake first entry; our proxies (10.x) appended the rest.
    chain = "198.51.100.66, 192.0.2.9, 10.1.2.3, 10.0.0.5"
    with serve_in_thread(scope_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as server:
        scope = ask(server.url, {"x-forwarded-for": chain})
        no_proxy_hop = ask(server.url, {"x-forwarded-for": "198.51.100.66, 192.0.2.9"})
    assert scope["client"] == ["192.0.2.9", 0]
    assert no_proxy_hop["client"] == ["192.0.2.9", 0]


def test_repeated_header_lines_are_one_list() -> None:
    with (
        serve_in_thread(scope_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as server,
        httpx.Client() as client,
    ):
        headers = [("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "10.9.9.9")]
        scope = client.get(server.url + "/", headers=headers).json()
    assert scope["client"] == ["192.0.2.1", 0]


def test_all_hops_trusted_gives_the_leftmost() -> None:
    with serve_in_thread(scope_app, forwarded_allow_ips="*") as server:
        scope = ask(server.url, {"x-forwarded-for": "192.0.2.1, 192.0.2.2"})
    assert scope["client"] == ["192.0.2.1", 0]


def test_hop_with_port() -> None:
    with serve_in_thread(scope_app) as server:
        v4 = ask(server.url, {"x-forwarded-for": "192.0.2.1:4711"})
        v6 = ask(server.url, {"x-forwarded-for": "[2001:db8::1]:4712"})
    assert v4["client"] == ["192.0.2.1", 4711]
    assert v6["client"] == ["2001:db8::1", 4712]


def test_websocket_schemes_and_unknown_proto() -> None:
    with serve_in_thread(scope_app) as server:
        wss = ask(server.url, {"x-forwarded-proto": "wss"})
        nonsense = ask(server.url, {"x-forwarded-proto": "gopher"})
        nearest = ask(server.url, {"x-forwarded-proto": "http, https"})
    assert wss["scheme"] == "https"  # an HTTP request behind a wss hop is https
    assert nonsense["scheme"] == "http"
    assert nearest["scheme"] == "https"


def test_websocket_behind_a_proxy() -> None:
    headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
    with (
        serve_in_thread(scope_app) as server,
        connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers=headers) as websocket,
    ):
        scope = json.loads(websocket.recv(timeout=5))
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["203.0.113.9", 0]


def test_ipv6_proxy_trusted_by_default() -> None:
    # uvicorn's default, 127.0.0.1,::1: a proxy on the IPv6 loopback is trusted too.
    with serve_in_thread(scope_app, host="::1") as server:
        scope = ask(server.url, FORWARDED)
    assert scope["client"] == ["203.0.113.7", 0]


@pytest.mark.parametrize(("allow", "trusted"), [("unix:", True), ("127.0.0.1", False)])
def test_unix_socket_peer(tmp_path: Path, allow: str, trusted: bool) -> None:
    path = str(tmp_path / "s.sock")
    with serve_in_thread(scope_app, uds=path, forwarded_allow_ips=allow):
        scope = ask("http://proxy", FORWARDED, httpx.HTTPTransport(uds=path))
    if trusted:
        assert scope["client"] == ["203.0.113.7", 0]
        assert scope["scheme"] == "https"
    else:
        assert scope["client"] is None
        assert scope["scheme"] == "http"


@pytest.mark.parametrize(
    ("env", "trusted"),
    [
        ({"FORWARDED_ALLOW_IPS": "10.9.9.9"}, False),
        ({"FORWARDED_ALLOW_IPS": "*"}, True),
        # shardcorn's own variable is read first.
        ({"FORWARDED_ALLOW_IPS": "10.9.9.9", "SHARDCORN_FORWARDED_ALLOW_IPS": "127.0.0.1"}, True),
    ],
)
def test_forwarded_allow_ips_from_the_environment(
    app_dir: Path, env: dict[str, str], trusted: bool
) -> None:
    args = ["scopeapp:app", "--app-dir", str(app_dir), "--port", "0"]
    with spawn(shardcorn_command(args), env=env) as server:
        wait_ready(server)
        scope = ask(server.url, FORWARDED)
    assert (scope["client"][0] == "203.0.113.7") is trusted


def test_forwarded_allow_ips_option_beats_environment(app_dir: Path) -> None:
    args = ["scopeapp:app", "--app-dir", str(app_dir), "--port", "0",
            "--forwarded-allow-ips", "10.0.0.1"]  # fmt: skip
    with spawn(shardcorn_command(args), env={"FORWARDED_ALLOW_IPS": "*"}) as server:
        wait_ready(server)
        scope = ask(server.url, FORWARDED)
    assert scope["client"][0] == "127.0.0.1"


# -- the parsing underneath, byte for byte ---------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 0)),
        ("192.0.2.1:80", ("192.0.2.1", 80)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[2001:db8::1]", ("2001:db8::1", 0)),
        ("2001:db8::1", ("2001:db8::1", 0)),
        ("192.0.2.1:x", ("192.0.2.1:x", 0)),
        ("192.0.2.1:99999", ("192.0.2.1:99999", 0)),
        ("192.0.2.1:\u00b2", ("192.0.2.1:\u00b2", 0)),
        ("[2001:db8::1", ("[2001:db8::1", 0)),
        ("unknown", ("unknown", 0)),
    ],
)
def test_split_host_port(entry: str, expected: tuple[str, int]) -> None:
    assert split_host_port(entry) == expected


def test_forwarded_client_edge_cases() -> None:
    trusted = parse_trusted_hosts("10.0.0.0/8")
    assert forwarded_client(trusted, " , ") is None
    assert forwarded_client(trusted, "garbage, 10.0.0.1") == ("garbage", 0)
    mapped = parse_trusted_hosts("127.0.0.1")
    # An IPv4 proxy seen through a dual-stack socket is still the trusted 127.0.0.1.
    assert forwarded_client(mapped, "192.0.2.5, ::ffff:127.0.0.1") == ("192.0.2.5", 0)
    assert forwarded_client(trusted, "10.0.0.2, 10.0.0.3") == ("10.0.0.2", 0)
