"""Listening sockets: one per shard slot, all bound to one address with SO_REUSEPORT.

Linux hashes each new connection to one of the sockets bound to a port with SO_REUSEPORT, so
every shard accepts from its own queue: no accept lock, no thundering herd. Two facts shape
this module:

* SO_REUSEPORT lets *any* process of the same user bind the port too, so a second server
  started by mistake would silently share the traffic. Before binding, we bind once without
  SO_REUSEPORT: if anything listens there, that fails with EADDRINUSE and we say so.
* A UNIX socket path or an inherited ``--fd`` cannot be bound twice; there every shard
  shares one socket (see :func:`shares_one_socket`).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from shardcorn.config import Config


class BindError(Exception):
    """The address cannot be bound; the message is one line for the user."""


def shares_one_socket(config: Config) -> bool:
    return config.uds is not None or config.fd is not None


SocketAddress = tuple[str, int] | tuple[str, int, int, int]


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, SocketAddress]:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return family, address  # type: ignore[return-value]


def _describe(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tcp_socket(family: socket.AddressFamily, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def probe_port(config: Config) -> None:
    """Fail with one clear line if host:port is taken (or the host is unusable)."""
    if config.port == 0 or shares_one_socket(config):
        return
    family, address = _resolve(config.host, config.port)
    probe = _tcp_socket(family, reuse_port=False)
    try:
        probe.bind(address)
    except OSError as exc:
        raise BindError(_bind_message(config.host, config.port, exc)) from None
    finally:
        probe.close()


def _bind_message(host: str, port: int, exc: OSError) -> str:
    where = _describe(host, port)
    if exc.errno == errno.EADDRINUSE:
        return f"cannot bind {where}: address already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {where}: no such address on this machine"
    if exc.errno == errno.EACCES:
        return f"cannot bind {where}: permission denied"
    return f"cannot bind {where}: {exc.strerror or exc}"


def bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    family, address = _resolve(host, port)
    sock = _tcp_socket(family, reuse_port=True)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_message(host, port, exc)) from None
    sock.setblocking(False)
    return sock


def _unix_socket_is_live(path: str) -> bool:
    """Whether a server accepts on ``path`` (connecting is the only way to tell)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_unix(path: str, backlog: int) -> socket.socket:
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise BindError(f"cannot bind {path}: it exists and is not a socket")
        if _unix_socket_is_live(path):
            raise BindError(f"cannot bind {path}: address already in use")
        os.unlink(path)  # a stale socket left by a previous run: nobody accepts on it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind {path}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"--fd {fd}: not a usable socket ({exc.strerror or exc})") from None
    sock.setblocking(False)
    return sock


def bind_sockets(config: Config, count: int) -> list[socket.socket]:
    """Bind ``count`` listening sockets (one per slot) or the one shared socket.

    Port 0 is resolved by the first bind, so every slot listens on the same port.
    """
    if config.uds is not None:
        return [bind_unix(config.uds, config.backlog)]
    if config.fd is not None:
        return [from_fd(config.fd)]
    probe_port(config)
    sockets = [bind_tcp(config.host, config.port, config.backlog)]
    port = sockets[0].getsockname()[1]
    try:
        for _ in range(count - 1):
            sockets.append(bind_tcp(config.host, port, config.backlog))
    except BindError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def address_of(sock: socket.socket) -> str:
    """How to describe a listening socket in the log."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    scheme_host = f"[{host}]" if sock.family == socket.AF_INET6 else host
    return f"{scheme_host}:{port}"
