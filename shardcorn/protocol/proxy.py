"""Proxy headers: believe X-Forwarded-For/-Proto/-Port only from trusted peers.

The peer's trust is decided once per connection; the headers are read only on requests that
carry them. With several proxies, ``X-Forwarded-For`` is read from the right: every address
we trust is a proxy of ours, and the first one we do not trust is the client (the leftmost
entry if every hop is trusted). An entry may carry a port (``1.2.3.4:5678``,
``[2001:db8::1]:443``), as some proxies write it; it becomes the client's port.
``X-Forwarded-Port`` is the port the client connected to, so it replaces the server port, not
the client's.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from shardcorn.config import TrustedHosts

UNIX_PEER = "unix:"  # how a UNIX-socket peer is named in --forwarded-allow-ips
_SCHEMES = {
    "http": ("http", "ws"),
    "https": ("https", "wss"),
    "ws": ("http", "ws"),
    "wss": ("https", "wss"),
}


def peer_is_trusted(trusted: TrustedHosts, host: str | None) -> bool:
    """Is ``host`` (an address; None for a UNIX-socket peer) one of our proxies?"""
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
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # On a dual-stack socket an IPv4 proxy arrives as ::ffff:a.b.c.d; --forwarded-allow-ips
        # names it in IPv4 form.
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def split_host_port(entry: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80`` or ``::1`` -> (host, port or 0).

    Anything else is returned whole, without a port, so the trust check never sees a
    value we have quietly rewritten.
    """
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket:
            return entry, 0
        if not rest:
            return host, 0
        port = _port(rest[1:]) if rest[:1] == ":" else None
        return (host, port) if port is not None else (entry, 0)
    if entry.count(":") == 1:
        host, _, text = entry.partition(":")
        port = _port(text)
        return (host, port) if port is not None else (entry, 0)
    return entry, 0


def _port(text: str) -> int | None:
    # isdigit() alone admits non-ASCII digits (superscripts, Arabic-Indic) that int() would
    # accept or choke on.
    if text.isascii() and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    return None


def forwarded_client(trusted: TrustedHosts, forwarded_for: str) -> tuple[str, int] | None:
    """The client named by an X-Forwarded-For list: the rightmost entry we do not trust."""
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    hops = [hop for hop in hops if hop]
    if not hops:
        return None
    for hop in reversed(hops):
        host, port = split_host_port(hop)
        if not peer_is_trusted(trusted, host):
            return host, port
    # Every hop is one of our proxies: the leftmost is as close to the client as we can get.
    return split_host_port(hops[0])


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
        # The rightmost value was written by the proxy nearest to us, the one we trust.
        proto = forwarded_proto.split(",")[-1].strip().lower()
        schemes = _SCHEMES.get(proto)
        if schemes is not None:
            scope["scheme"] = schemes[1] if scope["type"] == "websocket" else schemes[0]
    if forwarded_for is not None:
        client = forwarded_client(trusted, forwarded_for)
        if client is not None:
            scope["client"] = client
    if forwarded_port is not None:
        port = _port(forwarded_port.split(",")[-1].strip())
        if port is not None and scope.get("server"):
            scope["server"] = (scope["server"][0], port)
