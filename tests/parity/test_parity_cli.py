"""The command line a uvicorn user brings: --version, SHARDCORN_* variables (and
WEB_CONCURRENCY), --config shardcorn.toml, and every uvicorn 0.54 option either taken or
refused with its reason (and listed in docs/uvicorn-options.md)."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import click
import httpx
import pytest
from uvicorn.main import main as uvicorn_main

from shardcorn import __version__
from shardcorn.cli.main import main as shardcorn_main
from shardcorn.cli.uvicorn_compat import REFUSED_CHOICES, REFUSED_FLAGS
from shardcorn.testing import shardcorn_command
from tests.parity.helpers import error_lines, run_shardcorn, spawn, wait_ready

DOCS = Path(__file__).resolve().parents[2] / "docs" / "uvicorn-options.md"


def test_version() -> None:
    result = run_shardcorn(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f"shardcorn {__version__} (Python {platform.python_version()})"
    )


# -- environment variables -----------------------------------------------------------------
def scope_of(url: str) -> tuple[dict[str, object], httpx.Headers]:
    response = httpx.get(url + "/x")
    assert response.status_code == 200
    return json.loads(response.text), response.headers


def test_options_from_shardcorn_variables(app_dir: Path) -> None:
    env = {
        "SHARDCORN_APP": "scopeapp:app",
        "SHARDCORN_APP_DIR": str(app_dir),
        "SHARDCORN_PORT": "0",
        "SHARDCORN_ROOT_PATH": "/from-env",
        "SHARDCORN_HEADERS": "x-env:yes",
        "SHARDCORN_SERVER_HEADER": "false",
        "SHARDCORN_LOG_LEVEL": "debug",
    }
    with spawn(shardcorn_command([]), env=env) as server:
        wait_ready(server)
        scope, headers = scope_of(server.url)
    assert scope["root_path"] == "/from-env"
    assert headers["x-env"] == "yes"
    assert "server" not in headers


def test_command_line_beats_variables(app_dir: Path) -> None:
    env = {"SHARDCORN_ROOT_PATH": "/from-env", "SHARDCORN_PORT": "1"}
    args = ["scopeapp:app", "--app-dir", str(app_dir), "--port", "0", "--root-path", "/cli"]
    with spawn(shardcorn_command(args), env=env) as server:
        wait_ready(server)
        scope, _ = scope_of(server.url)
    assert scope["root_path"] == "/cli"


def test_bad_variable_value_names_the_option() -> None:
    result = run_shardcorn(["shardcorn.demo:app"], env={"SHARDCORN_PORT": "eighty"})
    assert result.returncode == 2
    assert "'--port'" in result.stderr


def test_web_concurrency_sets_the_number_of_shards() -> None:
    # Seen through the one rule that depends on it: --reload takes one shard only.
    result = run_shardcorn(["shardcorn.demo:app", "--reload"], env={"WEB_CONCURRENCY": "3"})
    assert result.returncode == 2
    assert error_lines(result) == ["Error: --reload cannot be combined with more than one shard"]


@pytest.mark.parametrize(
    ("env", "shards"),
    [
        ({"WEB_CONCURRENCY": "4"}, 4),
        ({"WEB_CONCURRENCY": "4", "SHARDCORN_SHARDS": "2"}, 2),  # ours first
        ({}, None),
    ],
)
def test_shards_resolution(env: dict[str, str], shards: int | None) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WEB_CONCURRENCY", "SHARDCORN_SHARDS"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        context = shardcorn_main.make_context("shardcorn", ["app:app"])
    assert context.params["shards"] == shards


# -- --config shardcorn.toml -----------------------------------------------------------------
def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shardcorn.toml"
    path.write_text(text)
    return path


def test_config_file_settings_and_cli_override(app_dir: Path) -> None:
    config = write_config(
        app_dir,
        f"""
        app = "scopeapp:app"
        app-dir = "{app_dir}"
        port = 0
        root_path = "/from-file"
        header = ["x-file: 1", "x-other: 2"]
        server-header = false
        timeout-keep-alive = 2
        """.replace("\n        ", "\n"),
    )
    with spawn(shardcorn_command(["--config", str(config)])) as server:
        wait_ready(server)
        scope, headers = scope_of(server.url)
    assert scope["root_path"] == "/from-file"
    assert headers["x-file"] == "1"
    assert headers["x-other"] == "2"
    assert "server" not in headers
    args = ["--config", str(config), "--root-path", "/cli", "--server-header"]
    with spawn(shardcorn_command(args)) as server:
        wait_ready(server)
        scope, headers = scope_of(server.url)
    assert scope["root_path"] == "/cli"
    assert headers["server"] == "shardcorn"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 8000", "unknown key 'prot' (did you mean 'port'?)"),
        ("no_such_setting = 1", "unknown key 'no_such_setting'"),
        ('port = "eighty"', "key 'port': expected an integer, got a string ('eighty')"),
        ("port = true", "key 'port': expected an integer, got a boolean (True)"),
        ("port = -1", "key 'port': -1 is below the minimum 0"),
        ('loop = "trio"', "key 'loop': 'trio' is not one of auto, uvloop, asyncio"),
        ("access-log = 1", "key 'access-log': expected true or false"),
        ("header = [1]", "key 'header': expected a string or a list of strings"),
        ('ssl-certfile = {path = "x"}', "key 'ssl-certfile': expected a string, got a table"),
        ("workers = 2\nshards = 3", "key 'shards' sets 'shards' a second time"),
        ("port = ", "not valid TOML"),
    ],
)
def test_config_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = write_config(tmp_path, text + "\n")
    result = run_shardcorn(["shardcorn.demo:app", "--config", str(config)])
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"Error: {config}: {message}" or message in lines[0]


def test_config_file_missing(tmp_path: Path) -> None:
    result = run_shardcorn(["shardcorn.demo:app", "--config", str(tmp_path / "none.toml")])
    assert result.returncode == 2
    assert "--config: file not found" in result.stderr


def test_config_file_cross_checks_still_apply(tmp_path: Path) -> None:
    config = write_config(tmp_path, "reload = true\nworkers = 2\n")
    result = run_shardcorn(["shardcorn.demo:app", "--config", str(config)])
    assert result.returncode == 2
    assert "--reload cannot be combined with more than one shard" in result.stderr


# -- uvicorn's options, one by one -------------------------------------------------------------
def uvicorn_flags() -> list[str]:
    return sorted(
        opt
        for param in uvicorn_main.params
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--") and opt != "--help"
    )


def shardcorn_flags() -> set[str]:
    return {
        opt
        for param in shardcorn_main.params
        if isinstance(param, click.Option) and not param.hidden
        for opt in (*param.opts, *param.secondary_opts)
    }


@pytest.mark.parametrize("flag", uvicorn_flags())
def test_every_uvicorn_option_is_taken_or_explained(flag: str) -> None:
    assert flag in shardcorn_flags() or flag in REFUSED_FLAGS, flag
    # ... and the table in the docs has a row for it.
    row = rf"^\|[^\n]*`{re.escape(flag)}[` =\[]"
    assert re.search(row, DOCS.read_text(), re.MULTILINE), f"no row for {flag} in {DOCS.name}"


def uvicorn_choices() -> list[tuple[str, str]]:
    """(setting, value) for every value uvicorn lists: click.Choice or an "[a|b]" metavar."""
    found = []
    for param in uvicorn_main.params:
        if isinstance(param.type, click.Choice):
            values = [str(value) for value in param.type.choices]
        elif isinstance(param, click.Option) and param.metavar and "|" in param.metavar:
            values = param.metavar.strip("[]").split("|")
        else:
            continue
        found.extend((str(param.name), value) for value in values)
    return found


def test_uvicorn_choices_are_found() -> None:
    assert ("http", "h11") in uvicorn_choices()
    assert ("lifespan", "on") in uvicorn_choices()


@pytest.mark.parametrize(("setting", "value"), uvicorn_choices())
def test_every_uvicorn_choice_is_taken_or_explained(setting: str, value: str) -> None:
    ours = {p.name: p.type for p in shardcorn_main.params if isinstance(p.type, click.Choice)}
    taken = setting in ours and value in getattr(ours[setting], "choices", ())
    assert taken or (setting, value) in REFUSED_CHOICES


@pytest.mark.parametrize("flag", sorted(REFUSED_FLAGS))
def test_refused_uvicorn_flags_say_why(flag: str) -> None:
    result = run_shardcorn(["shardcorn.demo:app", flag])
    assert result.returncode == 2
    assert f"Error: {flag}: {REFUSED_FLAGS[flag]}" in result.stderr


@pytest.mark.parametrize(("setting", "value"), sorted(REFUSED_CHOICES))
def test_refused_uvicorn_values_say_why(setting: str, value: str) -> None:
    result = run_shardcorn(["shardcorn.demo:app", f"--{setting}", value])
    assert result.returncode == 2
    assert REFUSED_CHOICES[(setting, value)] in result.stderr.replace("\n", " ")


def test_h11_max_incomplete_event_size_bounds_the_request_head() -> None:
    args = ["shardcorn.demo:app", "--port", "0", "--h11-max-incomplete-event-size", "1024"]
    with spawn(shardcorn_command(args)) as server:
        wait_ready(server)
        small = httpx.get(server.url + "/", headers={"x-pad": "a" * 100})
        large = httpx.get(server.url + "/", headers={"x-pad": "a" * 2000})
    assert small.status_code == 200
    assert large.status_code == 431
