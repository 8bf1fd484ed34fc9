"""Config: one declaration per setting, validation, immutability, pickling, and the CLI and
run() keywords derived from it."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import click
import pytest

import shardcorn
from shardcorn.cli.main import build_options
from shardcorn.config import (
    Config,
    ConfigError,
    declared_options,
    parse_header_option,
    parse_trusted_hosts,
)


def test_defaults() -> None:
    config = Config(app="shardcorn.demo:app")
    assert (config.host, config.port, config.backlog) == ("127.0.0.1", 8000, 2048)
    assert config.shards == 1 and config.loop == "auto" and config.lifespan == "auto"
    assert config.timeout_keep_alive == 5.0
    assert config.timeout_graceful_shutdown == 30.0
    assert (config.limit_request_line, config.limit_request_headers) == (8190, 65536)
    assert config.limit_request_fields == 100
    assert config.limit_concurrency is None and config.limit_max_requests is None
    assert config.server_header and config.date_header and config.access_log
    assert config.log_level == "info" and config.interface == "auto"


def test_frozen() -> None:
    config = Config(app="m:a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_pickles() -> None:
    config = Config(app="m:a", port=0, headers=("x-a: 1",), limit_concurrency=10)
    again = pickle.loads(pickle.dumps(config))
    assert again == config


def test_replace_validates() -> None:
    config = Config(app="m:a")
    assert config.replace(port=9000).port == 9000
    with pytest.raises(ConfigError):
        config.replace(port=-5)


def test_settings_rebuild_the_config() -> None:
    config = Config(app="m:a", port=1234, log_level="debug")
    assert Config(app="m:a", **config.settings()) == config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"app": None}, "no app given"),
        ({"app": "  "}, "no app given"),
        ({"port": -1}, "--port: -1 is below the minimum 0"),
        ({"backlog": 0}, "--backlog"),
        ({"loop": "trio"}, "--loop: 'trio' is not one of auto, uvloop, asyncio"),
        ({"lifespan": "sometimes"}, "--lifespan"),
        ({"log_level": "loud"}, "--log-level"),
        ({"limit_concurrency": 0}, "--limit-concurrency"),
        ({"limit_max_requests": 0}, "--limit-max-requests"),
        ({"limit_request_line": 10}, "--limit-request-line"),
        ({"limit_request_fields": 0}, "--limit-request-fields"),
        ({"timeout_keep_alive": -1.0}, "--timeout-keep-alive"),
        ({"root_path": "api"}, "--root-path must start with '/'"),
        ({"root_path": "/api/"}, "--root-path must not end with '/'"),
        ({"uds": "/tmp/s", "fd": 3}, "--uds and --fd"),
        ({"ssl_keyfile": "k.pem"}, "--ssl-keyfile and --ssl-certfile"),
        ({"reload": True, "shards": 2}, "--reload"),
        ({"metrics_path": "metrics"}, "--metrics-path"),
        ({"headers": ("no-colon",)}, "--header"),
    ],
)
def test_validation(settings: dict[str, Any], message: str) -> None:
    settings.setdefault("app", "m:a")
    with pytest.raises(ConfigError) as info:
        Config(**settings)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_reload_needs_an_import_string() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ConfigError, match="import string"):
        Config(app=app, reload=True)


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("X-Region: eu", (b"x-region", b"eu")),
        ("x-a:b", (b"x-a", b"b")),
        ("X-Empty:", (b"x-empty", b"")),
        ("x-url: http://a:b/c", (b"x-url", b"http://a:b/c")),
        ("x-latin: café", (b"x-latin", "café".encode("latin-1"))),
    ],
)
def test_header_option(raw: str, parsed: tuple[bytes, bytes]) -> None:
    assert parse_header_option(raw) == parsed


@pytest.mark.parametrize(
    "raw", ["no colon", "bad name: v", ": v", "x-a: a\rb", "x-a: a\nb", "x-a: a\x00b", "x: 中"]
)
def test_bad_header_option(raw: str) -> None:
    with pytest.raises(ConfigError, match="--header"):
        parse_header_option(raw)


def test_extra_headers() -> None:
    config = Config(app="m:a", headers=("X-A: 1", "x-b:2"))
    assert config.extra_headers == [(b"x-a", b"1"), (b"x-b", b"2")]


def test_trusted_hosts() -> None:
    everything, networks, literals = parse_trusted_hosts("10.0.0.0/8, ::1, unix:, *")
    assert everything
    assert [str(n) for n in networks] == ["10.0.0.0/8", "::1/128"]
    assert literals == frozenset({"unix:"})


def test_every_setting_is_declared_once_with_help() -> None:
    names = [f.name for f, _, _ in declared_options()]
    assert len(names) == len(set(names))
    for f, info, _ in declared_options():
        assert info.help.strip(), f.name


def test_cli_options_come_from_the_declarations() -> None:
    options = {p.name: p for p in build_options() if isinstance(p, click.Option)}
    for f, info, _ in declared_options():
        if not info.cli:
            assert f.name not in options
            continue
        option = options[f.name]
        assert "--" + f.name.replace("_", "-") in option.opts
        envvar = option.envvar
        envvars = [envvar] if isinstance(envvar, str) else list(envvar or ())
        assert "SHARDCORN_" + f.name.upper() in envvars
        for extra in info.envvars:
            assert extra in envvars
        for flag in info.flags:
            assert flag in option.opts


def test_run_keywords_are_the_settings() -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        shardcorn.run("m:a", no_such_setting=1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": "8000"}, "--port: expected an integer, got '8000'"),
        ({"port": True}, "--port: expected an integer"),
        ({"backlog": 1.5}, "--backlog: expected an integer"),
        ({"timeout_keep_alive": "5"}, "--timeout-keep-alive: expected a number"),
        ({"access_log": "no"}, "--access-log: expected true or false"),
        ({"host": 127001}, "--host: expected a string"),
        ({"headers": "x-a: 1"}, "--headers: expected a list of strings"),
        ({"headers": [b"x-a: 1"]}, "--headers: expected a list of strings"),
    ],
)
def test_types_are_checked(settings: dict[str, Any], message: str) -> None:
    # click converts command-line values; run() keywords and config files are checked here.
    with pytest.raises(ConfigError) as info:
        Config(app="m:a", **settings)
    assert str(info.value) == message or str(info.value).startswith(message)


def test_lists_become_tuples_and_ints_are_numbers() -> None:
    config = Config(app="m:a", headers=["x-a: 1"], timeout_keep_alive=2, use_colors=None)
    assert config.headers == ("x-a: 1",)
    assert config.timeout_keep_alive == 2
    assert hash(config.headers)
    assert pickle.loads(pickle.dumps(config)) == config
