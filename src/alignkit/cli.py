"""The one ``alignkit`` entry point.

Each feature area owns a light ``cli`` module exposing ``register(subparsers)``; it adds its
commands and sets ``func`` on each parser. Heavy imports (torch, transformers) happen inside the
handlers, so ``alignkit --help`` stays fast. A handler returns an exit code (0 on success).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from alignkit import __version__
from alignkit.errors import ConfigError, UserError  # noqa: F401  (UserError re-exported)

# Feature modules that contribute commands, in help order.
COMMAND_MODULES = [
    "alignkit.train.cli",
    "alignkit.generate.cli",
    "alignkit.evals.cli",
    "alignkit.judge.cli",
    "alignkit.pipelines.cli",
    "alignkit.pipelines.demo",
    "alignkit.annotate.cli",
]


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit.models import list_models

    table = Table(title="embedded models")
    for col in ("name", "kind", "licence", "status", "description"):
        table.add_column(col)
    rows = list_models(verify=not args.no_verify)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["licence"], r["status"], r["description"])
    Console().print(table)
    return 0 if all(r["status"].startswith(("ok", "installed")) for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignkit",
        description="Align language models end to end with the GLM-family methods: preferences, reward "
        "models, DPO/EXO, LongReward AI feedback, comparable evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"alignkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("models", help="list the embedded models and verify that they load")
    p.add_argument("--no-verify", action="store_true", help="only check the packages are installed")
    p.set_defaults(func=_cmd_models)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
