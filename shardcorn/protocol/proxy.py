"""Proxy headers: believe X-Forwarded-For/-Proto/-Port only from trusted peers.

The peer's trust is decided once per connection; the headers are read only on requests that
carry them. With several proxies, ``X-Forwarded-For`` is read from the right: every address
we trust is a proxy of ours, and the first one we do not trust is the client (the leftmost
entry if every hop is trusted). ``X-Forwarded-Port`` is the port the client connected to, so
it replaces the server port, not the client's.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from shardcorn.config import TrustedHosts

UNIX_PEER = "unix:"  # how a UNIX-socket peer is named in --forwarded-allow-ips
_SCHEMES = {"http": ("http", "ws"), "https": ("https", "wss"), "ws": ("http", "ws"),
            "wss": ("https", "wss")}


def peer_is_trusted(trusted: TrustedHosts, host: str | None) -> bool:
    everything, networks, literals = trusted
    if everything:
        return True
    if host is None:
        return UNIX_PEER in literals
    if host in literals:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return any(address in network for network in networks)


def apply_proxy_headers(
    scope: dict[str, Any], headers: list[tuple[bytes, bytes]], trusted: TrustedHosts | None
) -> None:
    """Rewrite client/scheme/server in ``scope`` from X-Forwarded-* (peer already trusted)."""
    if trusted is None:
        return
    forwarded_for = forwarded_proto = forwarded_port = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            # Repeated headers are one list (RFC 9110 5.3).
            text = value.decode("latin-1")
            forwarded_for = text if forwarded_for is None else f"{forwarded_for},{text}"
        elif name == b"x-forwarded-proto":
            forwarded_proto = value.decode("latin-1")
        elif name == b"x-forwarded-port":
            forwarded_port = value.decode("latin-1")
    if forwarded_proto is not None:
        proto = forwarded_proto.split(",")[-1].strip().lower()
        schemes = _SCHEMES.get(proto)
        if schemes is not None:
            scope["scheme"] = schemes[1] if scope["type"] == "websocket" else schemes[0]
    if forwarded_for is not None:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if hops:
            client = hops[0]
            for hop in reversed(hops):
                if not peer_is_trusted(trusted, hop):
                    client = hop
                    break
            scope["client"] = (client, 0)
    if forwarded_port is not None:
        port_text = forwarded_port.split(",")[-1].strip()
        if port_text.isdigit() and 0 < int(port_text) < 65536 and scope.get("server"):
            scope["server"] = (scope["server"][0], int(port_text))
