"""Loading the app: import strings, their errors, --app-dir, --factory, ASGI 2/3 detection."""

from __future__ import annotations

import asyncio
import functools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from shardcorn import demo
from shardcorn.config import Config
from shardcorn.loading import AppLoadError, detect_interface, import_from_string, load_app
from shardcorn.protocol.adapters import ASGI2Adapter


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for test modules; sys.path and sys.modules are restored afterwards."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    yield tmp_path
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        del sys.modules[name]


def write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", 'import string "nocolon" must be in the form "module:attribute"'),
        (":app", "must be in the form"),
        ("mod:", "must be in the form"),
        ("", "must be in the form"),
        ("no_such_module_for_tests:app", 'could not import module "no_such_module_for_tests"'),
        ("shardcorn.no_such:app", 'could not import module "shardcorn.no_such"'),
        ("shardcorn.demo:missing", 'attribute "missing" not found in module "shardcorn.demo"'),
        ("shardcorn.demo:app.missing", 'attribute "app.missing" not found'),
    ],
)
def test_import_errors_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(AppLoadError) as info:
        import_from_string(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    error = info.value  # no chained exception to print a traceback wall with
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_dotted_attributes() -> None:
    assert import_from_string("shardcorn.demo:app") is demo.app
    assert import_from_string("shardcorn.demo:app.__name__") == "app"


def test_error_inside_the_module_propagates(app_dir: Path) -> None:
    write(app_dir, "raises_on_import", "raise RuntimeError('module bug')\n")
    sys.path.insert(0, str(app_dir))
    with pytest.raises(RuntimeError, match="module bug"):
        import_from_string("raises_on_import:app")


def test_missing_dependency_inside_the_module_propagates(app_dir: Path) -> None:
    write(app_dir, "bad_import", "import no_such_dependency_for_tests\n")
    sys.path.insert(0, str(app_dir))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_for_tests"):
        import_from_string("bad_import:app")


def test_missing_submodule_of_a_real_package(app_dir: Path) -> None:
    pkg = app_dir / "realpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "inner.py").write_text("import realpkg.absent\n")
    sys.path.insert(0, str(app_dir))
    with pytest.raises(AppLoadError, match=r'"realpkg\.gone"'):
        import_from_string("realpkg.gone:app")
    # realpkg.inner exists but imports a missing sibling: that is a bug in the user's code.
    with pytest.raises(ModuleNotFoundError):
        import_from_string("realpkg.inner:app")


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    pass


def asgi2_function(scope: Any) -> Any:
    return asgi3_function


class ASGI2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        pass


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class ASGI2Instance:
    def __call__(self, scope: Any) -> Any:
        return ASGI2Class(scope)


class VarArgs:
    async def __call__(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (asgi3_function, "asgi3"),
        (asgi2_function, "asgi2"),
        (ASGI2Class, "asgi2"),
        (ASGI3Instance(), "asgi3"),
        (ASGI2Instance(), "asgi2"),
        (VarArgs(), "asgi3"),
        (functools.partial(asgi3_function), "asgi3"),
        (ASGI3Instance().__call__, "asgi3"),
    ],
)
def test_detect_interface(app: Any, expected: str) -> None:
    assert detect_interface(app) == expected


def test_starlette_is_asgi3() -> None:
    assert detect_interface(Starlette()) == "asgi3"


def test_load_app_object_and_asgi2_adapter() -> None:
    assert load_app(Config(app=asgi3_function)) is asgi3_function
    wrapped = load_app(Config(app=asgi2_function))
    assert isinstance(wrapped, ASGI2Adapter) and wrapped.app is asgi2_function
    forced = load_app(Config(app=ASGI3Instance(), interface="asgi2"))
    assert isinstance(forced, ASGI2Adapter)
    assert load_app(Config(app=asgi2_function, interface="asgi3")) is asgi2_function


def test_asgi2_adapter_calls_through() -> None:
    calls: list[Any] = []

    class App:
        def __init__(self, scope: Any) -> None:
            calls.append(scope)

        async def __call__(self, receive: Any, send: Any) -> None:
            calls.append((receive, send))

    adapter = ASGI2Adapter(App)
    asyncio.run(adapter({"type": "http"}, "r", "s"))
    assert calls == [{"type": "http"}, ("r", "s")]


def test_load_app_from_app_dir(app_dir: Path) -> None:
    write(app_dir, "dir_app", "async def app(scope, receive, send):\n    pass\n")
    app = load_app(Config(app="dir_app:app", app_dir=str(app_dir)))
    assert app.__module__ == "dir_app"
    assert sys.path[0] == str(app_dir)


def test_factory(app_dir: Path) -> None:
    write(
        app_dir,
        "fact_app",
        """
        async def made(scope, receive, send):
            pass

        def create():
            return made
    """,
    )
    app = load_app(Config(app="fact_app:create", app_dir=str(app_dir), factory=True))
    assert app.__name__ == "made"


def test_factory_errors(app_dir: Path) -> None:
    write(app_dir, "fact_bad", "create = 1\n\ndef returns_none():\n    return None\n")
    with pytest.raises(AppLoadError, match="factory 'fact_bad:create' is not callable"):
        load_app(Config(app="fact_bad:create", app_dir=str(app_dir), factory=True))
    with pytest.raises(AppLoadError, match="not callable"):
        load_app(Config(app="fact_bad:returns_none", app_dir=str(app_dir), factory=True))


def test_not_callable() -> None:
    with pytest.raises(AppLoadError, match=r"'shardcorn\.demo:TEXT' is not callable"):
        load_app(Config(app="shardcorn.demo:TEXT"))
