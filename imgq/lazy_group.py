"""A click group whose commands live in other modules, imported only when one of them runs.

``--help`` lists them from the short help given at registration, importing nothing, so a command
line with many commands still starts instantly.

>>> import click
>>> @click.group(cls=LazyGroup)
... def cli() -> None:
...     "Tools."
>>> cli.add_lazy_command("hello", "imgq.no_such_module:hello", "Say hello.")
>>> from click.testing import CliRunner
>>> print(CliRunner().invoke(cli, ["--help"]).output.split("Commands:")[1].strip())
hello  Say hello.
"""

from __future__ import annotations

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    """A group whose commands live in other modules, imported only when one of them runs.

    ``imgq --help`` lists them from the short help given at registration, importing nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, tuple[str, str]] = {}

    def add_lazy_command(self, name: str, target: str, short_help: str) -> None:
        """Register ``target`` ("package.module:attribute", a click command) as ``name``."""
        self._lazy[name] = (target, short_help)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy and cmd_name not in self.commands:
            module_name, _, attr = self._lazy[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[cmd_name][0]} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, self._lazy[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
