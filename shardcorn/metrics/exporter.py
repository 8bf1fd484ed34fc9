"""The metrics endpoint: a small HTTP server in a thread of the launcher process.

The exporter is deliberately not served by a shard: a scrape must answer while every shard
is busy (or stuck, or being replaced), and it must see all shards, not the one the kernel
happened to hand the connection to. So the launcher runs ``http.server`` in a daemon thread
on ``--metrics-host:--metrics-port``; each scrape reads the shards' stats blocks directly
(see ``collector``) and never waits on a shard's event loop.

Each connection gets its own short-lived thread (a client that connects and sends nothing
cannot hold up the next scrape) and is closed after one response (HTTP/1.0): a scraper
opens one connection per scrape interval, and nothing lingers when the exporter closes.
"""

from __future__ import annotations

import contextlib
import gzip
import selectors
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from shardcorn.config import Config
from shardcorn.logs import error_log
from shardcorn.metrics.collector import ShardcornCollector
from shardcorn.metrics.store import ShardTable, StatsStore
from shardcorn.shards.sockets import BindError

# A scraper that has not sent its request head after this long is dropped.
REQUEST_TIMEOUT = 10.0
_JOIN_TIMEOUT = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck scraper must never keep the launcher from exiting

    def __init__(
        self,
        address: tuple[str, int] | tuple[str, int, int, int],
        family: socket.AddressFamily,
        registry: CollectorRegistry,
        path: str,
    ) -> None:
        self.address_family = family
        self.registry = registry
        self.metrics_path = path
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also looks up the host's FQDN, which is a reverse DNS
        # query for an address such as 0.0.0.0: it can stall startup, and nothing uses it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "shardcorn-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        if urlsplit(self.path).path != self.server.metrics_path:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8", send_body)
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception:  # a bug in the collector: say so, keep serving
            error_log.exception("Metrics exporter: collecting the metrics failed")
            self._send(500, b"Internal Server Error\n", "text/plain; charset=utf-8", send_body)
            return
        self._send(200, body, content_type, send_body)

    def _send(self, status: int, body: bytes, content_type: str, send_body: bool) -> None:
        gzipped = status == 200 and _accepts_gzip(self.headers.get("Accept-Encoding", ""))
        if gzipped:
            # Prometheus asks for gzip; a few hundred samples shrink about tenfold.
            body = gzip.compress(body, compresslevel=1)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would drown the access log; keep them at debug level.
        error_log.debug("Metrics exporter: " + format, *args)


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"--metrics-host: cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return family, address  # type: ignore[return-value]


class Exporter:
    """The running endpoint. ``port`` is the bound port (useful with ``--metrics-port 0``)."""

    def __init__(self, config: Config, store: StatsStore, table: ShardTable) -> None:
        registry = CollectorRegistry(auto_describe=False)
        self.collector = ShardcornCollector(config, store, table)
        registry.register(self.collector)
        assert config.metrics_port is not None
        family, address = _resolve(config.metrics_host, config.metrics_port)
        try:
            self._server = _Server(address, family, registry, config.metrics_path)
        except OSError as exc:
            where = _where(config.metrics_host, config.metrics_port)
            raise BindError(
                f"cannot bind the metrics endpoint {where}: {exc.strerror or exc}"
            ) from None
        self.host = config.metrics_host
        self.port: int = self._server.server_address[1]
        self.path = config.metrics_path
        self._server.socket.setblocking(False)  # a connection reset before accept() is no hang
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="shardcorn-metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Accept scrapes until close().

        Not ``serve_forever()``: that polls for shutdown every few tenths of a second, and in a
        single-shard server every wake-up takes the GIL from the thread serving requests.
        This waits with no timeout; close() wakes it through a socket pair.
        """
        server = self._server
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fileobj is self._wake_reader for key, _ in events):
                    return
                try:
                    request, address = server.get_request()
                except OSError:  # gone before we took it, or out of descriptors: next one
                    continue
                server.process_request(request, address)  # a thread of its own (module doc)

    @property
    def url(self) -> str:
        return f"http://{_where(self.host, self.port)}{self.path}"

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._wake_writer.send(b"x")
            self._thread.join(_JOIN_TIMEOUT)
        self._server.server_close()
        self._wake_reader.close()
        self._wake_writer.close()


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_exporter(config: Config, store: StatsStore, table: ShardTable) -> Exporter | None:
    """Serve the metrics of ``store`` and ``table`` as ``config`` says; None when it says off.

    Raises :class:`~shardcorn.shards.sockets.BindError` (one line for the user) when the
    endpoint cannot be bound. ``table`` must list the running slots (``shard_up``): gauges
    of slots it does not list are reported as 0.
    """
    if config.metrics_port is None:
        return None
    exporter = Exporter(config, store, table)
    error_log.info("Metrics exporter on %s", exporter.url)
    return exporter
