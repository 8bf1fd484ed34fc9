"""--root-path, --env-file, --log-config (.json, .yaml, .ini), --uds and --fd, each through the
command line of a real server process."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest

from shardcorn.testing import serve_in_thread, shardcorn_command
from tests.parity.helpers import error_lines, run_shardcorn, scope_app, spawn, wait_ready


def serve_args(app_dir: Path, *extra: str) -> list[str]:
    return shardcorn_command(["scopeapp:app", "--app-dir", str(app_dir), "--port", "0", *extra])


def get_json(url: str, transport: httpx.HTTPTransport | None = None) -> dict[str, object]:
    with httpx.Client(transport=transport) as client:
        response = client.get(url)
    assert response.status_code == 200
    result: dict[str, object] = json.loads(response.text)
    return result


# -- --root-path ---------------------------------------------------------------------------
def test_root_path(app_dir: Path) -> None:
    with spawn(serve_args(app_dir, "--root-path", "/api/v1")) as server:
        wait_ready(server)
        scope = get_json(server.url + "/items")
    # ASGI: path is the full path, root_path its mount point (a proxy stripped the prefix).
    assert scope["root_path"] == "/api/v1"
    assert scope["path"] == "/api/v1/items"


@pytest.mark.parametrize(
    ("value", "message"), [("api", "must start with '/'"), ("/api/", "must not end with '/'")]
)
def test_bad_root_path(value: str, message: str) -> None:
    result = run_shardcorn(["shardcorn.demo:app", "--root-path", value])
    assert result.returncode == 2
    assert message in result.stderr


# -- --env-file ----------------------------------------------------------------------------
def test_env_file_is_loaded_before_the_app_is_imported(app_dir: Path) -> None:
    (app_dir / "scopeapp.py").write_text(
        (app_dir / "scopeapp.py").read_text()
        # Read at import time: the variable must already be set then.
        + "\nIMPORT_TIME_GREETING = os.environ['GREETING']\n"
    )
    env_file = app_dir / "prod.env"
    env_file.write_text("# comment\nGREETING='hello from .env'\nexport OTHER=1\n")
    with spawn(serve_args(app_dir, "--env-file", str(env_file))) as server:
        wait_ready(server)
        scope = get_json(server.url + "/")
    assert scope["greeting"] == "hello from .env"


def test_env_file_does_not_override_the_environment(app_dir: Path) -> None:
    env_file = app_dir / "prod.env"
    env_file.write_text("GREETING='from the file'\n")
    args = serve_args(app_dir, "--env-file", str(env_file))
    with spawn(args, env={"GREETING": "from the environment"}) as server:
        wait_ready(server)
        scope = get_json(server.url + "/")
    assert scope["greeting"] == "from the environment"


def test_missing_env_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    result = run_shardcorn(["shardcorn.demo:app", "--env-file", str(missing)])
    assert result.returncode == 2
    assert error_lines(result) == [f"Error: --env-file: file not found: {missing}"]


# -- --log-config --------------------------------------------------------------------------
JSON_LOG_CONFIG = {
    "version": 1,
    "formatters": {"custom": {"format": "CUSTOM-JSON %(levelname)s %(message)s"}},
    "handlers": {
        "err": {"class": "logging.StreamHandler", "formatter": "custom",
                "stream": "ext://sys.stderr"},
    },
    "loggers": {"shardcorn.error": {"handlers": ["err"], "level": "INFO", "propagate": False}},
}  # fmt: skip

YAML_LOG_CONFIG = """
version: 1
formatters:
  custom: {format: "CUSTOM-YAML %(levelname)s %(message)s"}
handlers:
  err: {class: logging.StreamHandler, formatter: custom, stream: "ext://sys.stderr"}
loggers:
  shardcorn.error: {handlers: [err], level: INFO, propagate: false}
"""

INI_LOG_CONFIG = """
[loggers]
keys=root,error

[handlers]
keys=err

[formatters]
keys=custom

[logger_root]
handlers=

[logger_error]
qualname=shardcorn.error
handlers=err
level=INFO
propagate=0

[handler_err]
class=StreamHandler
formatter=custom
args=(sys.stderr,)

[formatter_custom]
format=CUSTOM-INI %(levelname)s %(message)s
"""


@pytest.mark.parametrize(
    ("name", "content", "marker"),
    [
        ("log.json", json.dumps(JSON_LOG_CONFIG), "CUSTOM-JSON"),
        ("log.yaml", YAML_LOG_CONFIG, "CUSTOM-YAML"),
        ("log.ini", INI_LOG_CONFIG, "CUSTOM-INI"),
    ],
)
def test_log_config(app_dir: Path, name: str, content: str, marker: str) -> None:
    config_file = app_dir / name
    config_file.write_text(content)
    with spawn(serve_args(app_dir, "--log-config", str(config_file))) as server:
        line = server.read_until("running on")
        wait_ready(server)
        get_json(server.url + "/")
    assert line.startswith(f"{marker} INFO Shardcorn running on http://127.0.0.1:")


def test_log_config_keeps_loggers_it_does_not_name(app_dir: Path) -> None:
    # A dictConfig that only sets up the root logger must not silence shardcorn's loggers.
    config_file = app_dir / "root-only.json"
    config_file.write_text(json.dumps({
        "version": 1,
        "formatters": {"f": {"format": "ROOT %(name)s %(message)s"}},
        "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "f"}},
        "root": {"handlers": ["h"], "level": "INFO"},
    }))  # fmt: skip
    with spawn(serve_args(app_dir, "--log-config", str(config_file))) as server:
        line = server.read_until("running on")
    assert line.startswith("ROOT shardcorn.error Shardcorn running on")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "--log-config {path}: Expecting property name"),
        ("list.yaml", "- 1\n- 2\n", "--log-config {path}: expected a mapping"),
        ("bad.ini", "[loggers]\nkeys=root\n", "--log-config {path}: missing section or key"),
    ],
)
def test_broken_log_config_is_one_line(tmp_path: Path, name: str, content: str,
                                       message: str) -> None:  # fmt: skip
    path = tmp_path / name
    path.write_text(content)
    result = run_shardcorn(["shardcorn.demo:app", "--log-config", str(path)])
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert message.format(path=path) in lines[0]


# -- --uds ---------------------------------------------------------------------------------
def test_uds_serves_with_permissions_and_is_removed_at_exit(app_dir: Path) -> None:
    path = app_dir / "s.sock"
    with spawn(serve_args(app_dir, "--uds", str(path))) as server:
        line = server.read_until("running on")
        assert f"running on http://unix:{path}" in line
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        # As uvicorn: anyone on the machine may connect (a proxy often runs as another user).
        assert stat.S_IMODE(mode) == 0o666
        scope = get_json("http://local/x", httpx.HTTPTransport(uds=str(path)))
        assert scope["client"] is None
        server.send_signal(15)
        assert server.wait() == 0
    assert not path.exists()


def test_uds_replaces_a_stale_socket_file(app_dir: Path) -> None:
    path = app_dir / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a crash
    with spawn(serve_args(app_dir, "--uds", str(path))) as server:
        server.read_until("running on")
        assert get_json("http://local/", httpx.HTTPTransport(uds=str(path)))["path"] == "/"


def test_uds_refuses_a_path_that_is_not_a_socket(app_dir: Path) -> None:
    path = app_dir / "regular-file"
    path.write_text("keep me")
    result = run_shardcorn(["scopeapp:app", "--app-dir", str(app_dir), "--uds", str(path)])
    assert result.returncode == 1
    assert "exists and is not a socket" in result.stderr
    assert path.read_text() == "keep me"


def test_uds_refuses_a_socket_another_server_accepts_on(app_dir: Path) -> None:
    path = str(app_dir / "busy.sock")
    with serve_in_thread(scope_app, uds=path):
        result = run_shardcorn(["scopeapp:app", "--app-dir", str(app_dir), "--uds", path])
        assert result.returncode == 1
        assert error_lines(result)[-1].endswith(f"cannot bind {path}: address already in use")
        # The live server's socket file was left alone and still serves.
        assert get_json("http://local/z", httpx.HTTPTransport(uds=path))["path"] == "/z"


def test_uds_in_thread_server(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sock")
    with serve_in_thread(scope_app, uds=path):
        assert get_json("http://local/y", httpx.HTTPTransport(uds=path))["path"] == "/y"


# -- --fd ----------------------------------------------------------------------------------
def test_fd_serves_an_inherited_listening_socket(app_dir: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        fd = listener.fileno()
        args = shardcorn_command(["scopeapp:app", "--app-dir", str(app_dir), "--fd", str(fd)])
        with spawn(args, pass_fds=[fd]) as server:
            wait_ready(server)
            assert server.port == port
            scope = get_json(f"http://127.0.0.1:{port}/from-fd")
            assert scope["server"] == ["127.0.0.1", port]
            server.send_signal(15)
            assert server.wait() == 0
    finally:
        listener.close()


def test_fd_that_is_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "file", "wb") as fh:
        fd = fh.fileno()
        result = run_shardcorn(["shardcorn.demo:app", "--fd", str(fd)], pass_fds=[fd])
    assert result.returncode == 1
    assert f"--fd {fd}: not a usable socket" in result.stderr


def test_uds_and_fd_together_are_refused() -> None:
    result = run_shardcorn(["shardcorn.demo:app", "--uds", "/tmp/x.sock", "--fd", "3"])
    assert result.returncode == 2
    assert "--uds and --fd cannot be used together" in result.stderr
