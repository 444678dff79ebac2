"""Command families shared by several CLI modules (``durableflow runs ...``).

Several modules add verbs to one noun: this module's ``runs`` verbs come from the
artefact commands (replay, fork, prune, watch) and from the operator commands. Each
asks ``command_family(subparsers, "runs", ...)`` for the noun's sub-commands; the first
call creates the noun, later calls get the same one.
"""

from __future__ import annotations

import argparse
from typing import Any

_COMMANDS_ATTRIBUTE = "durableflow_commands"


def command_family(subparsers: Any, name: str, *, help: str, description: str) -> Any:
    """The sub-command action of the noun ``name``, created on first use."""
    parser: argparse.ArgumentParser | None = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help, description=description)
        commands = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
        setattr(parser, _COMMANDS_ATTRIBUTE, commands)
    return getattr(parser, _COMMANDS_ATTRIBUTE)
