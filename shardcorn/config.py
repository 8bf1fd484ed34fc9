"""Every setting shardcorn has, declared once.

Each field of :class:`Config` is one setting: its name, type and default live in the field,
its help text, command-line flags, environment variable and bounds in the field's metadata.
The click command (``shardcorn.cli``), the keywords of :func:`shardcorn.run` and the Config
itself are all derived from these declarations, so a new option is added in exactly one place.

Config is frozen and holds only plain values (strings, numbers, tuples), so it pickles and can
be handed to process shards. Live objects (sockets, the loaded app, SSL contexts) are built by
each shard from it. Validation happens in ``__post_init__`` and raises :class:`ConfigError`,
which the command line turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shardcorn.logs import level_number

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(ValueError):
    """A setting has a value shardcorn cannot use. The message is one line for the user."""


@dataclass(frozen=True)
class OptionInfo:
    """What the command line needs to know about one setting besides its type and default."""

    help: str
    flags: tuple[str, ...] = ()  # extra spellings, e.g. ("--workers",) for shards
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    metavar: str | None = None
    envvars: tuple[str, ...] = ()  # read after SHARDCORN_<NAME>, e.g. WEB_CONCURRENCY
    cli: bool = True
    negatable: bool = True  # booleans get --name/--no-name


def option(default: Any, help: str, **info: Any) -> Any:
    """Declare one setting: a dataclass field that carries its command-line description."""
    return field(default=default, metadata={"shardcorn": OptionInfo(help=help, **info)})


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Config:
    """All settings of one server. Build it with keywords; it validates itself."""

    app: Any = option(  # noqa: RUF009 - option() makes a dataclasses.field
        None, "The ASGI app as module:attribute, or the app object itself.", cli=False
    )

    # -- where to listen -------------------------------------------------------------------
    host: str = option("127.0.0.1", "Bind to this host (IPv4, IPv6 or a name).")
    port: int = option(8000, "Bind to this port; 0 picks a free one (logged).", minimum=0)
    uds: str | None = option(None, "Bind to this UNIX domain socket instead of host:port.")
    fd: int | None = option(
        None, "Serve on this already-bound listening file descriptor.", minimum=0
    )
    backlog: int = option(2048, "Maximum number of connections waiting to be accepted.", minimum=1)

    # -- shards ----------------------------------------------------------------------------
    shards: int = option(
        1,
        "Number of shards (event loops, each with its own SO_REUSEPORT socket).",
        flags=("--workers",),
        minimum=1,
        envvars=("WEB_CONCURRENCY",),
    )
    shard_mode: str = option(
        "process", "Run shards as child processes or as threads.", choices=("process", "thread")
    )
    timeout_worker_healthcheck: float = option(
        10.0,
        "Replace a shard that does not answer a health check for this many seconds.",
        minimum=0.1,
    )
    timeout_shard_startup: float = option(
        60.0,
        "A shard must be serving (app imported, lifespan started) within this many seconds.",
        minimum=0.1,
    )

    # -- implementation choices ------------------------------------------------------------
    loop: str = option("auto", "Event loop implementation.", choices=("auto", "uvloop", "asyncio"))
    http: str = option("auto", "HTTP protocol implementation.", choices=("auto", "httptools"))
    ws: str = option(
        "auto", "WebSocket protocol implementation.", choices=("auto", "none", "wsproto")
    )
    ws_max_size: int = option(16 * 1024 * 1024, "Largest WebSocket message, in bytes.", minimum=1)
    ws_max_queue: int = option(32, "Received WebSocket messages queued for the app.", minimum=1)
    ws_ping_interval: float | None = option(20.0, "Seconds between WebSocket pings.", minimum=0.0)
    ws_ping_timeout: float | None = option(20.0, "Seconds to wait for a pong.", minimum=0.0)
    ws_per_message_deflate: bool = option(True, "Offer WebSocket per-message deflate.")
    tune_malloc: bool = option(
        True,
        "Fix glibc's malloc thresholds so large bodies reuse heap memory instead of faulting "
        "in fresh pages (keeps up to 32 MiB free per process; see shardcorn/shards/malloc.py).",
    )
    lifespan: str = option("auto", "Lifespan events.", choices=("auto", "on", "off"))
    interface: str = option(
        "auto", "Application interface.", choices=("auto", "asgi3", "asgi2", "wsgi")
    )
    wsgi_threads: int = option(
        10, "Threads per shard that run a WSGI app's requests (--interface wsgi).", minimum=1
    )

    # -- the app ---------------------------------------------------------------------------
    app_dir: str = option(".", "Look for the app's module in this directory.")
    factory: bool = option(
        False, "Treat APP as a factory: call it to get the app.", negatable=False
    )
    env_file: str | None = option(None, "Load environment variables from this file.")
    root_path: str = option("", "The ASGI root_path, for an app mounted below a path prefix.")

    # -- logging ---------------------------------------------------------------------------
    log_config: str | None = option(None, "Logging configuration file (.json, .yaml or .ini).")
    log_level: str = option("info", "Log level.", choices=LOG_LEVELS)
    access_log: bool = option(True, "Write an access log line per request.")
    use_colors: bool | None = option(None, "Colour the log (default: when stderr is a terminal).")

    # -- proxies and response headers ------------------------------------------------------
    proxy_headers: bool = option(
        True, "Trust X-Forwarded-Proto/-For/-Port from addresses in --forwarded-allow-ips."
    )
    forwarded_allow_ips: str = option(
        "127.0.0.1,::1",
        "Comma-separated addresses/CIDR ranges trusted for proxy headers; '*' trusts every "
        "peer, 'unix:' peers on a UNIX socket.",
        envvars=("FORWARDED_ALLOW_IPS",),
    )
    server_header: bool = option(True, "Send a 'server: shardcorn' header.")
    date_header: bool = option(True, "Send a 'date' header.")
    headers: tuple[str, ...] = option(
        (),
        "Extra response header NAME:VALUE (repeatable).",
        flags=("--header",),
        metavar="NAME:VALUE",
    )

    # -- limits and timeouts ---------------------------------------------------------------
    limit_concurrency: int | None = option(
        None,
        "Answer 503 above this many connections or requests in flight (per shard).",
        minimum=1,
    )
    limit_max_requests: int | None = option(
        None, "Recycle a shard after it has served this many requests.", minimum=1
    )
    limit_max_requests_jitter: int = option(
        0, "Add a random 0..N to --limit-max-requests per shard.", minimum=0
    )
    limit_request_line: int = option(8190, "Longest request line, in bytes (414).", minimum=64)
    limit_request_headers: int = option(
        65536,
        "Largest request head (all header lines), in bytes (431).",
        minimum=256,
        flags=("--h11-max-incomplete-event-size",),  # uvicorn's name for the same guard
    )
    limit_request_fields: int = option(100, "Most header fields in a request (431).", minimum=1)
    limit_request_body: int | None = option(
        None, "Largest request body, in bytes (413).", minimum=0
    )
    timeout_keep_alive: float = option(
        5.0, "Close keep-alive connections idle for this many seconds.", minimum=0.0
    )
    timeout_request_header: float = option(
        30.0, "Deadline from a request's first byte to the end of its head (408).", minimum=0.1
    )
    # nginx's client_body_timeout and send_timeout, both 60 s: long enough for a slow mobile
    # link, short enough that a stalled peer does not pin a connection and an app task forever.
    timeout_request_body_idle: float | None = option(
        60.0,
        "Give up on a request body that makes no progress for this many seconds (408; the app "
        "sees http.disconnect).",
        minimum=0.1,
    )
    timeout_write: float | None = option(
        60.0,
        "Close a connection whose client reads none of a response for this many seconds while "
        "the app waits to send more.",
        minimum=0.1,
    )
    timeout_response: float | None = option(
        None,
        "Answer 503 (or close) when the app has not finished after this many seconds.",
        minimum=0.1,
    )
    timeout_graceful_shutdown: float = option(
        30.0, "On shutdown, wait this long for requests in flight, then cancel them.", minimum=0.0
    )

    # -- TLS -------------------------------------------------------------------------------
    ssl_keyfile: str | None = option(None, "TLS private key file.")
    ssl_certfile: str | None = option(None, "TLS certificate file.")
    ssl_keyfile_password: str | None = option(None, "Password of the TLS private key.")
    ssl_version: int = option(
        17,
        "TLS protocol as an ssl.PROTOCOL_* number: 17 (TLS_SERVER) and 2 (TLS) negotiate; "
        "3, 4, 5 pin TLS 1.0, 1.1, 1.2.",
    )
    ssl_cert_reqs: int = option(
        0, "Client certificates: 0 none, 1 optional, 2 required.", minimum=0
    )
    ssl_ca_certs: str | None = option(None, "CA certificates file for client certificates.")
    # uvicorn 0.54 dropped its old "TLSv1" default: that string limits TLS 1.2 to legacy
    # SHA-1 CBC suites. Unset means OpenSSL's own defaults.
    ssl_ciphers: str | None = option(
        None, "Ciphers to allow (OpenSSL cipher list; default: OpenSSL's)."
    )

    # -- reload ----------------------------------------------------------------------------
    reload: bool = option(False, "Restart the server when source files change.", negatable=False)
    reload_dirs: tuple[str, ...] = option(
        (), "Directory to watch (repeatable).", flags=("--reload-dir",)
    )
    reload_includes: tuple[str, ...] = option(
        (), "Glob of files to watch (repeatable).", flags=("--reload-include",)
    )
    reload_excludes: tuple[str, ...] = option(
        (), "Glob of files to ignore (repeatable).", flags=("--reload-exclude",)
    )
    reload_delay: float = option(
        0.25,
        "Seconds the files must stay unchanged after a change before the restart.",
        minimum=0.0,
    )

    # -- metrics ---------------------------------------------------------------------------
    metrics_port: int | None = option(
        None, "Serve Prometheus metrics on this port (off unless set).", minimum=0
    )
    metrics_host: str = option("127.0.0.1", "Host of the metrics endpoint.")
    metrics_path: str = option("/metrics", "Path of the metrics endpoint.")

    def __post_init__(self) -> None:
        for name, info, given in _declared_values(self):
            value = given
            if isinstance(given, list):
                # run(headers=[...]) is natural; the frozen Config keeps a tuple.
                value = tuple(given)
                object.__setattr__(self, name, value)
            _check_type(name, value)
            _check_one(name, info, value)
        if self.app is None or (isinstance(self.app, str) and not self.app.strip()):
            raise ConfigError("no app given: pass APP as module:attribute")
        for raw in self.headers:
            parse_header_option(raw)
        if self.uds is not None and self.fd is not None:
            raise ConfigError("--uds and --fd cannot be used together")
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ConfigError("--ssl-keyfile and --ssl-certfile must be given together")
        if self.reload and self.shards > 1:
            raise ConfigError("--reload cannot be combined with more than one shard")
        if self.reload and not isinstance(self.app, str):
            raise ConfigError("--reload needs the app as an import string (module:attribute)")
        if self.root_path and not self.root_path.startswith("/"):
            raise ConfigError(f"--root-path must start with '/': {self.root_path!r}")
        if self.root_path.endswith("/"):
            raise ConfigError(f"--root-path must not end with '/': {self.root_path!r}")
        if not self.metrics_path.startswith("/"):
            raise ConfigError(f"--metrics-path must start with '/': {self.metrics_path!r}")
        parse_trusted_hosts(self.forwarded_allow_ips)
        if self.ssl_version not in SSL_PROTOCOLS:
            known = ", ".join(f"{n} ({name})" for n, name in SSL_PROTOCOLS.items())
            raise ConfigError(f"--ssl-version {self.ssl_version}: a server can use {known}")
        if self.ssl_cert_reqs not in (0, 1, 2):
            raise ConfigError(f"--ssl-cert-reqs {self.ssl_cert_reqs}: expected 0, 1 or 2")

    # -- derived values --------------------------------------------------------------------
    @property
    def is_ssl(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        """The --header options as (lower-cased name, value) pairs."""
        return [parse_header_option(raw) for raw in self.headers]

    @property
    def log_level_number(self) -> int:
        return level_number(self.log_level)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict[str, Any]:
        """Every setting but the app, as keywords that rebuild this Config."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "app"}


def declared_options() -> Iterator[tuple[dataclasses.Field[Any], OptionInfo, Any]]:
    """Yield (field, info, resolved type) for every declared setting, in declaration order."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        yield f, f.metadata["shardcorn"], hints[f.name]


_HINTS: dict[str, Any] = {}


def _check_type(name: str, value: Any) -> None:
    """Refuse a value of the wrong type (run() and config files are not checked by click)."""
    if value is None:
        return
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(Config))
    kind = _HINTS[name]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if kind is bool:
        ok, wanted = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        wanted = "a number"
    elif kind is str:
        ok, wanted = isinstance(value, str), "a string"
    elif typing.get_origin(kind) is tuple:
        ok = isinstance(value, tuple) and all(isinstance(item, str) for item in value)
        wanted = "a list of strings"
    else:
        return
    if not ok:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag}: expected {wanted}, got {value!r}")


def _declared_values(config: Config) -> Iterator[tuple[str, OptionInfo, Any]]:
    for f in dataclasses.fields(config):
        yield f.name, f.metadata["shardcorn"], getattr(config, f.name)


def check_setting(name: str, value: Any, label: str) -> None:
    """Check one value against its setting's choices and bounds; errors start with ``label``."""
    _check_one(name, Config.__dataclass_fields__[name].metadata["shardcorn"], value, label)


def _check_one(name: str, info: OptionInfo, value: Any, label: str | None = None) -> None:
    flag = label or "--" + name.replace("_", "-")
    if value is None:
        return
    if info.choices is not None and value not in info.choices:
        raise ConfigError(f"{flag}: {value!r} is not one of {', '.join(info.choices)}")
    if (
        info.minimum is not None
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value < info.minimum
    ):
        raise ConfigError(f"{flag}: {value!r} is below the minimum {info.minimum:g}")


def parse_header_option(raw: str) -> tuple[bytes, bytes]:
    """Split one --header NAME:VALUE option; refuse anything that could split a response."""
    name, sep, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise ConfigError(f"--header {raw!r}: expected NAME:VALUE with a token NAME")
    if _BAD_VALUE.search(value):
        raise ConfigError(f"--header {raw!r}: control characters are not allowed in a value")
    try:
        return name.lower().encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"--header {raw!r}: the value must be Latin-1") from None


# The ssl.PROTOCOL_* numbers --ssl-version accepts (uvicorn's option takes these numbers).
# The client-only 16 (PROTOCOL_TLS_CLIENT) and the removed SSLv2/SSLv3 cannot serve.
SSL_PROTOCOLS = {
    2: "PROTOCOL_TLS",
    3: "PROTOCOL_TLSv1",
    4: "PROTOCOL_TLSv1_1",
    5: "PROTOCOL_TLSv1_2",
    17: "PROTOCOL_TLS_SERVER",
}


TrustedHosts = tuple[
    bool, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], frozenset[str]
]


def parse_trusted_hosts(spec: str) -> TrustedHosts:
    """Parse --forwarded-allow-ips: (trust everything?, networks, literal names such as a UDS)."""
    everything = False
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    literals: set[str] = set()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item == "*":
            everything = True
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            literals.add(item)  # e.g. "unix:" for a UNIX socket peer, or a hostname
    return everything, tuple(networks), frozenset(literals)
