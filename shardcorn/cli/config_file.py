"""``--config shardcorn.toml``: settings from a TOML file, so production keeps them in one place.

Keys are Config's setting names, with dashes or underscores (``limit-concurrency`` or
``limit_concurrency``), plus the command-line aliases (``workers``, ``header``, ``reload-dir``)
and ``app``. Each value is checked here, against the setting's declared type, choices and
bounds, so a mistake names the key it is under; settings that depend on each other are
checked by Config as usual. Relative paths are relative to the working directory, as on the
command line. Command-line options and SHARDCORN_* variables win over the file.

Example::

    app = "myapp:app"
    host = "0.0.0.0"
    port = 8443
    workers = 4
    ssl-certfile = "/etc/shardcorn/cert.pem"
    ssl-keyfile = "/etc/shardcorn/key.pem"
    header = ["x-frame-options: DENY"]
"""

from __future__ import annotations

import difflib
import sys
import typing
from typing import Any

from shardcorn.cli.main import _base_type
from shardcorn.config import ConfigError, check_setting, declared_options

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


def _setting_names() -> dict[str, tuple[str, Any]]:
    """Every key the file may use -> (setting name, declared type)."""
    names: dict[str, tuple[str, Any]] = {"app": ("app", str)}
    for f, info, annotation in declared_options():
        if not info.cli:
            continue
        for spelling in (f.name, *(flag[2:] for flag in info.flags)):
            names[spelling.replace("-", "_")] = (f.name, annotation)
    return names


def load_config_file(path: str) -> dict[str, Any]:
    """Read ``path`` and return its settings as Config keywords; ConfigError names the key."""
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    names = _setting_names()
    settings: dict[str, Any] = {}
    for key, value in document.items():
        known = names.get(key.replace("-", "_"))
        if known is None:
            close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
            hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
        name, annotation = known
        if name in settings:
            raise ConfigError(f"{path}: key {key!r} sets {name!r} a second time")
        label = f"{path}: key {key!r}"
        converted = _convert(value, annotation, label)
        if name != "app":
            check_setting(name, converted, label)
        settings[name] = converted
    return settings


def _convert(value: Any, annotation: Any, label: str) -> Any:
    """Check a TOML value against a setting's type; return it as Config wants it."""
    kind = _base_type(annotation)
    if typing.get_origin(kind) is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(
                f"{label}: expected a string or a list of strings, got {_show(value)}"
            )
        return tuple(items)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label}: expected true or false, got {_show(value)}")
        return value
    if kind is int:
        # TOML booleans are not numbers, though Python's bool is an int.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label}: expected an integer, got {_show(value)}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{label}: expected a number, got {_show(value)}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a string, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"
