"""The command line a uvicorn user brings: --version, SHARDCORN_* variables (and
WEB_CONCURRENCY), --config shardcorn.toml. Each uvicorn option: test_parity_uvicorn_options."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import httpx
import pytest

from shardcorn import __version__
from shardcorn.cli.main import main as shardcorn_main
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
