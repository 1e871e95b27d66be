"""The one ``alignkit`` entry point.

Each feature area's ``cli`` module declares ``COMMANDS``: :class:`alignkit.commands.Command`
entries (a strict config model + one run function, named by strings) and :class:`Group` words.
Parsers, flags and ``--help`` are generated from the config models (:mod:`alignkit.commands`) only
for the command being run, so ``alignkit --help`` imports neither torch nor the recipes.
Library errors a user can fix are mapped to a one-line message and exit code 2 here, once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from alignkit import __version__
from alignkit.commands import Command, Group, execute
from alignkit.commands import build_parser as command_parser
from alignkit.config import StrictModel
from alignkit.errors import UserError

# Feature modules that contribute commands, in help order.
COMMAND_MODULES = [
    "alignkit.train.cli",
    "alignkit.generate.cli",
    "alignkit.evals.cli",
    "alignkit.judge.cli",
    "alignkit.data.cli",
    "alignkit.evals.config_commands",
    "alignkit.pipelines.cli",
    "alignkit.pipelines.critique_commands",
    "alignkit.annotate.cli",
]

COMMANDS: list[Command | Group] = [
    Command("models", "list the embedded models and verify that they load",
            "alignkit.cli:ModelsConfig", "alignkit.cli:cmd_models", echo=False),
]


class ModelsConfig(StrictModel):
    """``alignkit models``: list the embedded models."""

    verify: bool = True
    """Load each model and run one forward pass (``--no-verify``: only check the packages are installed)."""


def cmd_models(cfg: ModelsConfig) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit.models import list_models

    table = Table(title="embedded models")
    for col in ("name", "kind", "licence", "status", "description"):
        table.add_column(col)
    rows = list_models(verify=cfg.verify)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["licence"], r["status"], r["description"])
    Console().print(table)
    return 0 if all(r["status"].startswith(("ok", "installed")) for r in rows) else 1

# Errors whose message is the whole story for a user (bad input, bad config, unusable model ...):
# printed as one line, exit code 2. Named by their qualified names so none of them is imported here.
USER_FACING_ERRORS = frozenset({
    "alignkit.errors.UserError",
    "alignkit.errors.ConfigError",
    "alignkit.errors.DataError",
    "alignkit.models.ModelError",
    "alignkit.generate.engine.GenerationError",
    "alignkit.pipelines.stages.PipelineError",
    "alignkit.train.loop.NonFiniteError",
    "alignkit.annotate.db.DatabaseError",
    "builtins.FileNotFoundError",
})


def registry() -> dict[str, Command | Group]:
    """Every command and group by its path ("eval compare"), in help order."""
    entries: list[Command | Group] = list(COMMANDS)
    for name in COMMAND_MODULES:
        entries.extend(importlib.import_module(name).COMMANDS)
    return {e.path: e for e in entries}


def _children(reg: dict[str, Command | Group], path: str) -> list[Command | Group]:
    depth = len(path.split()) + 1 if path else 1
    return [e for p, e in reg.items() if len(p.split()) == depth and p.startswith(path)
            and (not path or p.split()[:-1] == path.split())]


def build_parser(reg: dict[str, Command | Group] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: the command list only (each command's own parser is built when run)."""
    reg = reg or registry()
    parser = argparse.ArgumentParser(
        prog="alignkit",
        description="Align language models end to end with the GLM-family methods: preferences, reward "
        "models, DPO/EXO, LongReward AI feedback, comparable evaluation.",
        epilog="Every command: alignkit COMMAND --config FILE.yaml [--flags] [key.sub=value ...]; "
        "alignkit COMMAND --help lists its config keys.",
    )
    parser.add_argument("--version", action="version", version=f"alignkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for e in _children(reg, ""):
        sub.add_parser(e.path, help=e.help, add_help=False)
    return parser


def _group_help(reg: dict[str, Command | Group], path: str) -> str:
    lines = [f"usage: alignkit {path} SUBCOMMAND ...", "", reg[path].help, "", "sub-commands:"]
    lines += [f"  {c.path.split()[-1]:14s} {c.help}" for c in _children(reg, path)]
    return "\n".join(lines)


def _split(reg: dict[str, Command | Group], argv: list[str]) -> tuple[str, list[str]]:
    """The longest command path at the start of ``argv`` and the arguments after it."""
    path = ""
    for i, word in enumerate(argv):
        candidate = f"{path} {word}".strip()
        if candidate not in reg:
            return path, argv[i:]
        path = candidate
    return path, []


def route(reg: dict[str, Command | Group], argv: list[str]) -> tuple[str, list[str]]:
    """The command path ``argv`` names and the arguments it gets.

    A command's ``dispatch`` option is another spelling of its sub-command word:
    ``alignkit eval --task mathusereval ARGS`` (or ``--task=mathusereval``) routes like
    ``alignkit eval mathusereval ARGS``. An unknown value is a :class:`UserError` listing the valid ones.
    """
    path, rest = _split(reg, argv)
    option = getattr(reg.get(path), "dispatch", None)
    hits = [i for i, a in enumerate(rest) if option and (a == option or a.startswith(option + "="))]
    if not hits:
        return path, rest
    names = [c.path.split()[-1] for c in _children(reg, path)]
    valid = f"valid: {', '.join(names)}"
    if len(hits) > 1:
        raise UserError(f"alignkit {path}: {option} given {len(hits)} times; name one sub-command ({valid})")
    i = hits[0]
    if rest[i] == option:
        if i + 1 == len(rest) or rest[i + 1].startswith("-"):
            raise UserError(f"alignkit {path}: {option} needs a value ({valid})")
        name, used = rest[i + 1], 2
    else:
        name, used = rest[i].partition("=")[2], 1
    if name not in names:
        note = reg[path].dispatch_note
        raise UserError(f"alignkit {path}: unknown {option} {name!r}; {valid}" + (f". {note}" if note else ""))
    return route(reg, [*path.split(), name, *rest[:i], *rest[i + used:]])


def _is_user_facing(exc: BaseException) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in USER_FACING_ERRORS for c in type(exc).__mro__)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    reg = registry()
    try:
        path, rest = route(reg, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    entry = reg.get(path)
    if entry is None:
        parser = build_parser(reg)
        parser.parse_args(argv)  # --help, --version, or an unknown command (exit 2)
        parser.print_help()
        return 2
    if isinstance(entry, Group):
        print(_group_help(reg, path), file=sys.stdout if rest[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if rest[:1] in (["-h"], ["--help"]) else 2
    if "-h" in rest or "--help" in rest:
        command_parser(entry, _children(reg, path)).print_help()
        return 0
    try:
        return execute(entry, rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_user_facing(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
