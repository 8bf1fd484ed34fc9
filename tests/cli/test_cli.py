"""The command line: options, bad input, exit codes, app loading, as a user runs it.

Each test runs ``python -m shardcorn`` in a child process (with a timeout): exit codes and
what reaches the terminal are what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from shardcorn.testing import serve_process

TIMEOUT = 30


def shardcorn(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardcorn", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


HELLO = """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello from %s" % __name__.encode()})
"""


def test_help_lists_options() -> None:
    result = shardcorn("--help")
    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--lifespan",
        "--limit-concurrency",
        "--no-access-log",
        "--timeout-keep-alive",
        "--header",
        "--factory",
        "--app-dir",
        "--interface",
    ):
        assert flag in result.stdout


def test_version() -> None:
    result = shardcorn("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("shardcorn 0.")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The output is one line (after click's usage lines, if any), and no traceback."""
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus", "shardcorn.demo:app"], "No such option"),
        (["shardcorn.demo:app", "--port", "eighty"], "'eighty' is not a valid integer"),
        (["shardcorn.demo:app", "--loop", "trio"], "trio"),
        (["shardcorn.demo:app", "--lifespan", "maybe"], "maybe"),
        (["shardcorn.demo:app", "extra-argument"], "unexpected extra argument"),
    ],
)
def test_bad_options_exit_2(args: list[str], needle: str) -> None:
    result = shardcorn(*args)
    assert result.returncode == 2
    assert needle in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "missing the APP argument"),
        (["shardcorn.demo:app", "--root-path", "api"], "--root-path must start with '/'"),
        (["shardcorn.demo:app", "--port", "-1"], "--port: -1 is below the minimum 0"),
        (["shardcorn.demo:app", "--limit-request-line", "10"], "--limit-request-line"),
        (["shardcorn.demo:app", "--header", "bad header"], "--header"),
        (["shardcorn.demo:app", "--header", "x-a:b\x01c"], "control characters"),
        (["shardcorn.demo:app", "--timeout-keep-alive", "-1"], "--timeout-keep-alive"),
        (["shardcorn.demo:app", "--uds", "/tmp/x.sock", "--fd", "3"], "--uds and --fd"),
    ],
)
def test_config_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    result = shardcorn(*args)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("Error: ") and needle in line


def test_config_error_from_the_environment() -> None:
    result = shardcorn("shardcorn.demo:app", env={"SHARDCORN_ROOT_PATH": "nope"})
    assert result.returncode == 2
    assert "--root-path must start with '/'" in one_error_line(result)


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("nocolon", 'import string "nocolon" must be in the form "module:attribute"'),
        (":app", 'import string ":app" must be in the form "module:attribute"'),
        ("shardcorn.demo:", 'must be in the form "module:attribute"'),
        ("no_such_module_xyz:app", 'could not import module "no_such_module_xyz"'),
        ("shardcorn.no_such_sub:app", 'could not import module "shardcorn.no_such_sub"'),
        ("shardcorn.demo:nope", 'attribute "nope" not found in module "shardcorn.demo"'),
        ("shardcorn.demo:app.nope", 'attribute "app.nope" not found'),
        ("shardcorn.demo:TEXT", "is not callable"),
    ],
)
def test_bad_import_strings_exit_1_with_one_line(app: str, message: str) -> None:
    result = shardcorn(app, "--port", "0")
    assert result.returncode == 1
    assert message in one_error_line(result)


def test_exception_inside_the_app_module_shows_its_traceback(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "broken_app",
        """
        def helper():
            raise ZeroDivisionError("the user's bug")
        helper()
        app = None
    """,
    )
    result = shardcorn("broken_app:app", "--app-dir", str(tmp_path), "--port", "0")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ZeroDivisionError: the user's bug" in result.stderr
    assert "broken_app.py" in result.stderr


def test_missing_import_inside_the_app_module_is_the_users_bug(tmp_path: Path) -> None:
    write_module(tmp_path, "needs_dep", "import not_installed_dependency_xyz\napp = None\n")
    result = shardcorn("needs_dep:app", "--app-dir", str(tmp_path), "--port", "0")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "not_installed_dependency_xyz" in result.stderr


def test_not_callable_factory(tmp_path: Path) -> None:
    write_module(tmp_path, "fact", "create = 42\n")
    result = shardcorn("fact:create", "--factory", "--app-dir", str(tmp_path), "--port", "0")
    assert result.returncode == 1
    assert "factory" in one_error_line(result)


def test_factory_raising_shows_its_traceback(tmp_path: Path) -> None:
    write_module(tmp_path, "fact", "def create():\n    raise KeyError('setting')\n")
    result = shardcorn("fact:create", "--factory", "--app-dir", str(tmp_path), "--port", "0")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError" in result.stderr


def test_app_dir_and_dotted_attribute(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "nested_app",
        HELLO
        + """
    class Holder:
        inner = staticmethod(app)
    """,
    )
    with serve_process(
        ["nested_app:Holder.inner", "--app-dir", str(tmp_path), "--port", "0"]
    ) as server:
        assert httpx.get(server.url, timeout=10).text == "hello from nested_app"


def test_factory(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "factory_app",
        HELLO.replace("async def app", "async def _app")
        + """
    def create():
        return _app
    """,
    )
    with serve_process(
        ["factory_app:create", "--factory", "--app-dir", str(tmp_path), "--port", "0"]
    ) as server:
        assert httpx.get(server.url, timeout=10).text == "hello from factory_app"


ASGI2 = """
    class App:
        def __init__(self, scope):
            self.scope = scope

        async def __call__(self, receive, send):
            if self.scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"asgi2"})

    def app2(scope):
        return App(scope)
"""


@pytest.mark.parametrize("target", ["asgi2_app:App", "asgi2_app:app2"])
@pytest.mark.parametrize("interface", ["auto", "asgi2"])
def test_asgi2(tmp_path: Path, target: str, interface: str) -> None:
    write_module(tmp_path, "asgi2_app", ASGI2)
    args = [target, "--app-dir", str(tmp_path), "--port", "0", "--interface", interface]
    with serve_process(args) as server:
        assert httpx.get(server.url, timeout=10).text == "asgi2"


def test_options_from_the_environment(tmp_path: Path) -> None:
    env = {
        "SHARDCORN_HEADERS": "x-from-env:yes",
        "SHARDCORN_SERVER_HEADER": "false",
        "SHARDCORN_APP": "shardcorn.demo:app",
    }
    with serve_process(["--port", "0"], env=env) as server:
        response = httpx.get(server.url, timeout=10)
    assert response.headers["x-from-env"] == "yes"
    assert "server" not in response.headers


def test_header_options_reach_responses() -> None:
    args = [
        "shardcorn.demo:app",
        "--port",
        "0",
        "--header",
        "X-Region:eu",
        "--header",
        "x-team: core",
        "--no-date-header",
    ]
    with serve_process(args) as server:
        response = httpx.get(server.url, timeout=10)
    assert response.headers["x-region"] == "eu" and response.headers["x-team"] == "core"
    assert "date" not in response.headers and response.headers["server"] == "shardcorn"


def test_trace_log_level_and_colours() -> None:
    args = ["shardcorn.demo:app", "--port", "0", "--log-level", "trace", "--use-colors"]
    with serve_process(args) as server:
        httpx.get(server.url, timeout=10)
        line = server.read_until("HTTP connection made")
    assert "\x1b[34mTRACE\x1b[0m" in line
    assert "\x1b[32mINFO\x1b[0m" in server.log
