"""Every uvicorn option (read from uvicorn's own click command) is either taken by shardcorn
or refused with its reason, and the README's uvicorn table has a row for it."""

from __future__ import annotations

import re
from pathlib import Path

import click
import httpx
import pytest

from shardcorn.cli.main import main as shardcorn_main
from shardcorn.cli.uvicorn_compat import REFUSED_CHOICES, REFUSED_FLAGS
from shardcorn.testing import shardcorn_command
from tests.parity.helpers import run_shardcorn, spawn, wait_ready

# uvicorn is a dev dependency (the thing we compare with), not a test one.
uvicorn_main = pytest.importorskip("uvicorn.main").main

DOCS = Path(__file__).resolve().parents[2] / "README.md"


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
