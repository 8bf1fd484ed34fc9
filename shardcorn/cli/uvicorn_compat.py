"""uvicorn options and values shardcorn does not take, each with the reason and what to use.

A command line copied from uvicorn either works or stops with one line that says why
(exit 2), instead of click's bare "no such option". The README's "Coming from uvicorn"
table has them all; every other uvicorn option has a shardcorn equivalent under the same name.
"""

from __future__ import annotations

from typing import Any

import click

_NO_HTTP2 = (
    "shardcorn serves HTTP/1.1 only; terminate HTTP/2 at the proxy or load balancer in front of it"
)

# uvicorn flags with no job here.
REFUSED_FLAGS = {
    "--http2": _NO_HTTP2,
    "--reset-contextvars": (
        "not needed: each request already runs in a copy of its shard's context, which "
        "context variables set during lifespan never reach (share data through lifespan state)"
    ),
}

# (setting, value) pairs uvicorn accepts for a choice option and shardcorn does not.
REFUSED_CHOICES = {
    ("http", "h11"): "shardcorn parses HTTP/1.1 with httptools only; use --http auto",
    ("http", "zttp"): _NO_HTTP2,
    ("ws", "websockets"): "shardcorn's WebSockets are built on wsproto; use --ws auto",
    ("ws", "websockets-sansio"): "shardcorn's WebSockets are built on wsproto; use --ws auto",
    ("loop", "zuvloop"): "shardcorn runs on uvloop or asyncio; use --loop uvloop",
}


class ExplainedChoice(click.Choice):  # type: ignore[type-arg]  # generic only in click >= 8.2
    """A click.Choice that says why a uvicorn-only value is refused."""

    def __init__(self, choices: tuple[str, ...], setting: str) -> None:
        super().__init__(choices)
        self.setting = setting

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        why = REFUSED_CHOICES.get((self.setting, value))
        if why is not None:
            self.fail(f"{value!r}: {why}", param, ctx)
        return super().convert(value, param, ctx)


def _refuse(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        flag = param.opts[0]
        raise click.UsageError(f"{flag}: {REFUSED_FLAGS[flag]}", ctx)


def refused_flag_options() -> list[click.Parameter]:
    """Hidden options that catch uvicorn-only flags and explain them."""
    return [
        click.Option([flag], is_flag=True, hidden=True, expose_value=False, callback=_refuse)
        for flag in REFUSED_FLAGS
    ]
