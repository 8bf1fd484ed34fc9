"""The click command. Its options are generated from :class:`shardcorn.config.Config`.

Every setting becomes ``--name-with-dashes`` (plus any alias the declaration lists), reads
``SHARDCORN_NAME`` (plus listed variables such as ``WEB_CONCURRENCY``) from the environment,
and is passed to Config only when given, so Config's defaults are the only defaults.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

import click

from shardcorn import __version__
from shardcorn.cli.uvicorn_compat import ExplainedChoice, refused_flag_options
from shardcorn.config import Config, ConfigError, declared_options


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``tuple[str, ...]`` stays as it is."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def build_options() -> list[click.Parameter]:
    params: list[click.Parameter] = []
    for f, info, annotation in declared_options():
        if not info.cli:
            continue
        flag = "--" + f.name.replace("_", "-")
        envvars = ["SHARDCORN_" + f.name.upper(), *info.envvars]
        kind = _base_type(annotation)
        help_text = info.help
        default = f.default
        if default not in (None, (), "") and not isinstance(default, bool):
            help_text += f"  [default: {default}]"
        common: dict[str, Any] = {"help": help_text, "envvar": envvars, "default": None}
        decls = [flag, *info.flags, f.name]  # the bare name is the parameter's name
        if kind is bool:
            if info.negatable:
                decls = [f"{flag}/--no-{flag[2:]}", f.name]
            params.append(click.Option(decls, is_flag=True, **common))
            continue
        if typing.get_origin(kind) is tuple:
            params.append(
                click.Option(
                    decls,
                    multiple=True,
                    type=str,
                    metavar=info.metavar,
                    help=help_text,
                    envvar=envvars,
                )
            )
            continue
        click_type: Any = {int: click.INT, float: click.FLOAT, str: click.STRING}[kind]
        if info.choices is not None:
            click_type = ExplainedChoice(info.choices, f.name)
        params.append(click.Option(decls, type=click_type, metavar=info.metavar, **common))
    return params


def _collect(app: str | None, options: dict[str, Any]) -> dict[str, Any]:
    given = {
        name: value
        for name, value in options.items()
        if value is not None and not (isinstance(value, tuple) and not value)
    }
    if app is not None:
        given["app"] = app
    return given


def _main(app: str | None, config_file: str | None, **options: Any) -> None:
    settings: dict[str, Any] = {}
    if config_file is not None:
        from shardcorn.cli.config_file import load_config_file

        try:
            settings.update(load_config_file(config_file))
        except ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
    settings.update(_collect(app, options))
    if "app" not in settings:
        click.echo("Error: missing the APP argument (module:attribute)", err=True)
        sys.exit(2)
    try:
        config = Config(**settings)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    # Imported here so that --help, --version and bad options answer without loading the
    # server (uvloop, httptools, the protocols).
    from shardcorn.shards.launcher import run

    sys.exit(run(config))


def build_command() -> click.Command:
    params: list[click.Parameter] = [
        click.Argument(["app"], required=False, envvar="SHARDCORN_APP"),
        click.Option(
            ["--config", "config_file"],
            type=click.Path(dir_okay=False),
            envvar="SHARDCORN_CONFIG",
            help="Read settings from this TOML file (command-line options win).",
        ),
        *build_options(),
        *refused_flag_options(),
    ]
    command = click.Command(
        "shardcorn",
        params=params,
        callback=_main,
        help="Run the ASGI app APP (module:attribute) on shardcorn.",
        context_settings={"help_option_names": ["-h", "--help"], "show_default": False},
    )
    return click.version_option(
        __version__,
        "--version",
        prog_name="shardcorn",
        message="%(prog)s %(version)s (Python " + sys.version.split()[0] + ")",
    )(command)


main = build_command()
