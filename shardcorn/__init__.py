"""shardcorn: a sharded ASGI server.

``shardcorn.run("module:app", port=8000, shards=2)`` serves an app from Python with the same
settings as the command line (see :class:`shardcorn.config.Config`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from shardcorn.config import Config, ConfigError


def run(app: Any, **settings: Any) -> None:
    """Serve ``app`` (an import string or an app object) until stopped.

    Keyword arguments are the settings of :class:`Config` (``host``, ``port``, ``shards``,
    ...). Raises ``SystemExit`` with a non-zero code when the server fails to start.
    """
    from shardcorn.shards.launcher import run as launch

    unknown = sorted(set(settings) - set(Config.__dataclass_fields__) - {"app"})
    if unknown:
        raise TypeError(f"run() got unknown setting(s): {', '.join(unknown)}")
    code = launch(Config(app=app, **settings))
    if code != 0:
        raise SystemExit(code)


__all__ = ["Config", "ConfigError", "__version__", "run"]
