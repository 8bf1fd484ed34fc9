"""Loading the application named on the command line and wrapping it as an ASGI 3 callable.

Errors the user made in the import string (bad form, no such module, no such attribute, not
callable) become :class:`AppLoadError`: one line, exit code 1. An exception raised while the
user's module runs is the user's bug, and is left to propagate with its traceback.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from shardcorn.config import Config
from shardcorn.protocol.adapters import ASGI2Adapter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AppLoadError(Exception):
    """The app named by the user cannot be loaded; the message is one line."""


def import_from_string(spec: str) -> Any:
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(f'import string "{spec}" must be in the form "module:attribute"')
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module *named by the user* is their typo; a missing import inside
        # their module is a bug in it and keeps its traceback.
        if (
            exc.name is not None
            and module_name.startswith(exc.name)
            and (exc.name == module_name or module_name[len(exc.name)] == ".")
        ):
            raise AppLoadError(f'could not import module "{module_name}"') from None
        raise
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f'attribute "{attrs}" not found in module "{module_name}"') from None
    return obj


def _positional_arity(func: Any) -> int | None:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in kinds)


def detect_interface(app: Any) -> str:
    """Tell ASGI 3 (app(scope, receive, send)) from ASGI 2 (app(scope) -> instance) and
    WSGI (app(environ, start_response)): no ASGI app can be called with two arguments."""
    if inspect.isclass(app):
        # An ASGI 2 app is often a class constructed with the scope; PEP 3333 allows a
        # class constructed with (environ, start_response) whose instances are iterated.
        arity = _positional_arity(app)
        return {1: "asgi2", 2: "wsgi"}.get(arity or 0, "asgi3")
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else type(app).__call__
    arity = _positional_arity(app)
    if arity in (1, 2) and not inspect.iscoroutinefunction(target):
        return "asgi2" if arity == 1 else "wsgi"
    return "asgi3"


def load_app(config: Config) -> ASGIApp:
    """Import (or take) the app, call the factory if asked, and adapt it to ASGI 3."""
    if config.app_dir and config.app_dir not in sys.path:
        sys.path.insert(0, config.app_dir)
    target = config.app
    app = import_from_string(target) if isinstance(target, str) else target
    if config.factory:
        if not callable(app):
            raise AppLoadError(f"the app factory {target!r} is not callable")
        app = app()
    if not callable(app):
        raise AppLoadError(f"the app {target!r} is not callable")
    interface = config.interface
    if interface == "auto":
        interface = detect_interface(app)
    if interface == "asgi2":
        return ASGI2Adapter(app)
    if interface == "wsgi":
        from shardcorn.protocol.wsgi import WSGIAdapter

        return WSGIAdapter(app, threads=config.wsgi_threads)
    return app  # type: ignore[no-any-return]
