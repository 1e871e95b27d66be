"""One way in: every command is a strict config model plus one run function.

A :class:`Command` names its config model and its run function (``"module:name"`` strings, so
nothing heavy is imported until that command runs). From the model this module generates the
sub-command's parser: ``--config FILE.yaml``, positional ``key.sub=value`` overrides, a ``--flag``
per field (``--name`` for top-level fields, ``--section.key`` for nested ones, ``--x/--no-x`` for
booleans), the spellings users already rely on (the model's ``cli_aliases``), and ``--help`` built
from the fields' docstrings. The resolved config is printed on stderr and saved beside the outputs.

Precedence, lowest first: model defaults < ``--config`` YAML < flags < ``key.sub=value`` overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from alignkit.config import StrictModel, describe_fields, dump_config, import_object, load_config, parse_value

_OVERRIDE_RE = re.compile(r"^[A-Za-z_][\w.]*=")


@dataclass(frozen=True)
class Command:
    """One ``alignkit <path>`` command: a config model and the function that runs it."""

    path: str
    """Words after ``alignkit``, e.g. ``"eval compare"``."""
    help: str
    config: str
    """``"module:ClassName"`` of the strict config model."""
    run: str | Callable[..., int | None]
    """``"module:function"`` (or the function); called as ``function(cfg, **switches)``, returns an
    exit code (None = 0)."""
    description: str = ""
    save_to: str | None = None
    """Attribute (or method) of the config giving the output dir or file beside which the resolved
    config is saved after a successful run (``<dir>/config.yaml`` or ``<stem>.config.yaml``)."""
    echo: bool = True
    """Print the resolved config on stderr before running."""
    switches: tuple[tuple[str, str], ...] = ()
    """(name, help) of on/off run options that are not part of the config (e.g. ``resume``)."""
    dispatch: str | None = None
    """An option that names one of this command's sub-commands: with ``dispatch="--task"``,
    ``alignkit eval --task X ARGS`` (or ``--task=X``) runs ``alignkit eval X ARGS``."""
    dispatch_note: str = ""
    """What the user may have meant instead, appended to the error for an unknown ``--task`` value."""


@dataclass(frozen=True)
class Group:
    """A word that only groups sub-commands (``annotate``, ``longreward``, ...)."""

    path: str
    help: str


def load(ref: str) -> Any:
    return import_object(ref, "command")


# ------------------------------------------------------------------------------------ flags
@dataclass
class Flag:
    """One generated command-line flag and the config key it sets."""

    key: str
    options: list[str]
    kind: Literal["bool", "list", "value"]
    keep_text: bool
    """Values stay strings (the field accepts text); otherwise they are parsed as YAML scalars."""
    split: bool = True
    choices: list[str] | None = None
    help: str = ""
    variadic: bool = False
    """A list flag that takes several values at once (``--checkpoints runs/a/step-*`` after shell expansion)."""
    extra: list[str] = field(default_factory=list)


def _args(ann: Any) -> tuple:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(ann) if a is not type(None))
    return (ann,)


def _accepts_text(ann: Any) -> bool:
    for a in _args(ann):
        if a is str or (typing.get_origin(a) is Literal and all(isinstance(x, str) for x in typing.get_args(a))):
            return True
    return False


def _section(ann: Any) -> type[BaseModel] | None:
    models = [a for a in _args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 and len(_args(ann)) == 1 else None


def _help_text(f, default: str) -> str:
    text = (f.description or "").strip().split("\n\n")[0]
    text = " ".join(text.split())
    if default:
        text += f" (default: {default})"
    return text.replace("%", "%%")


def flags_of(cls: type[BaseModel], prefix: str = "") -> list[Flag]:
    """The generated flags of a config model, its sections' fields included (``--section.key``)."""
    out: list[Flag] = []
    positional = set(getattr(cls, "cli_positional", ()))
    whole = set(getattr(cls, "cli_whole", ()))
    variadic = set(getattr(cls, "cli_variadic", ()))
    for name, f in cls.model_fields.items():
        key = prefix + name
        if not prefix and name in positional:
            continue
        ann = f.annotation
        sub = _section(ann)
        if sub is not None:
            out.extend(flags_of(sub, key + "."))
            continue
        if f.discriminator or any(typing.get_origin(a) is dict or a is dict for a in _args(ann)):
            continue  # tagged unions and mappings: YAML or key.sub=value overrides
        option = "--" + (name.replace("_", "-") if not prefix else key)
        base = [a for a in _args(ann)]
        default = "" if f.is_required() else repr(f.get_default(call_default_factory=True))
        if f.is_required():
            default = "required"
        if all(a is bool for a in base):
            kind = "bool"
        elif any(typing.get_origin(a) in (list, tuple) for a in base):
            kind = "list"
        else:
            kind = "value"
        item_ann = ann
        if kind == "list":
            lst = next(a for a in base if typing.get_origin(a) in (list, tuple))
            item_ann = (typing.get_args(lst) or (str,))[0]
        choices = None
        lits = [a for a in base if typing.get_origin(a) is Literal]
        if kind == "value" and len(lits) == 1 and len(base) == 1:
            choices = [str(x) for x in typing.get_args(lits[0])]
        out.append(Flag(key, [option], kind, _accepts_text(item_ann), split=name not in whole,
                        choices=choices, help=_help_text(f, default), variadic=kind == "list" and name in variadic))
    out.extend(_renamed_flags(cls, prefix, {fl.key: fl for fl in out}))
    if not prefix:
        by_key = {fl.key: fl for fl in out}
        for alias, target in getattr(cls, "cli_aliases", {}).items():
            if target not in by_key:
                raise TypeError(f"{cls.__name__}.cli_aliases: {alias!r} -> {target!r} is not a flag of the model")
            by_key[target].options.append(alias)
    return out


def _renamed_flags(cls: type[BaseModel], prefix: str, made: dict[str, Flag]) -> list[Flag]:
    """A flag for each old spelling (``renamed``) of a flag's key; it sets the old key, so giving both
    spellings is the config's "not both" error rather than a silent last-one-wins."""
    out = []
    for old, r in (cls.renamings().items() if issubclass(cls, StrictModel) else ()):
        target = made.get(prefix + r.new)
        if target is not None and r.values is None:
            option = "--" + (old.replace("_", "-") if not prefix else prefix + old)
            out.append(dataclasses.replace(target, key=prefix + old, options=[option],
                                           help=f"old spelling of {target.options[0]}"))
    return out


def _convert(flag: Flag, raw: Any) -> Any:
    if flag.kind == "bool":
        return raw
    if flag.kind == "list":
        items = [x for chunk in raw for x in (chunk.split(",") if flag.split else [chunk])]
        items = [x.strip() if flag.split else x for x in items if not flag.split or x.strip()]
        return items if flag.keep_text else [parse_value(x) for x in items]
    return raw if flag.keep_text else parse_value(raw)


# ------------------------------------------------------------------------------------ parsers
def keys_epilog(cls: type[BaseModel]) -> str:
    lines = ["config keys (YAML, --flags, or key.sub=value overrides):"]
    for key, default, desc in describe_fields(cls):
        first = " ".join(desc.split("\n\n")[0].split()) if desc else ""
        lines.append(f"  {key:34s} {default:14s} {first}")
    aliases = getattr(cls, "cli_aliases", {})
    if aliases:
        lines.append("flag spellings kept for compatibility: "
                     + ", ".join(f"{a} = {k}" for a, k in aliases.items()))
    return "\n".join(lines).replace("%", "%%")


def build_parser(cmd: Command, children: list[Command | Group] = ()) -> argparse.ArgumentParser:
    """The argparse parser of one command, generated from its config model."""
    cls = load(cmd.config)
    epilog = keys_epilog(cls)
    if children:
        also = (f"\n  (also spelled: alignkit {cmd.path} {cmd.dispatch} SUB-COMMAND ...)" if cmd.dispatch else "")
        epilog = ("sub-commands:\n" + "\n".join(f"  {c.path.split()[-1]:14s} {c.help}" for c in children)
                  + also + "\n\n" + epilog)
    positional = list(getattr(cls, "cli_positional", ()))
    usage = f"alignkit {cmd.path} [--config FILE.yaml] [--flags] {' '.join(p.upper() for p in positional)} [key.sub=value ...]"
    p = argparse.ArgumentParser(prog=f"alignkit {cmd.path}", usage=" ".join(usage.split()),
                                description=cmd.description or cmd.help,
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with the config keys below")
    for name, text in cmd.switches:
        p.add_argument("--" + name.replace("_", "-"), action="store_true", dest="switch:" + name, help=text)
    metavar = " ".join([x.upper() for x in positional] + ["key.sub=value"])
    p.add_argument("args", nargs="*", metavar=metavar,
                   help=(f"{', '.join(positional)} then " if positional else "") + "dotted config overrides")
    for fl in flags_of(cls):
        kw: dict[str, Any] = {"dest": "cfg:" + fl.key, "default": argparse.SUPPRESS, "help": fl.help}
        if fl.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif fl.variadic:
            kw.update(action="extend", nargs="+", metavar="VALUE")
        elif fl.kind == "list":
            kw.update(action="append", metavar="A,B" if fl.split else "VALUE")
        else:
            kw["metavar"] = "{" + ",".join(fl.choices) + "}" if fl.choices else fl.key.split(".")[-1].upper()
            if fl.choices:
                kw["choices"] = fl.choices
        p.add_argument(*fl.options, **kw)
    return p


def resolve(cmd: Command, argv: list[str]) -> tuple[BaseModel, dict[str, bool]]:
    """Parse ``argv`` for ``cmd`` into its validated config object and its switches."""
    cls = load(cmd.config)
    parser = build_parser(cmd)
    ns = parser.parse_intermixed_args(argv)
    flags = {fl.key: fl for fl in flags_of(cls)}
    values: dict[str, Any] = {}
    switches: dict[str, bool] = {}
    swept: list[str] = []  # overrides a variadic flag swallowed (`--checkpoints a b key=v`)
    for dest, raw in vars(ns).items():
        if dest.startswith("cfg:"):
            flag = flags[dest[4:]]
            if flag.variadic:
                swept += [x for x in raw if _OVERRIDE_RE.match(x) and not Path(x).exists()]
                raw = [x for x in raw if x not in swept]
            values[dest[4:]] = _convert(flag, raw)
        elif dest.startswith("switch:"):
            switches[dest[7:]] = raw
    overrides = swept + [a for a in ns.args if _OVERRIDE_RE.match(a)]
    rest = [a for a in ns.args if not _OVERRIDE_RE.match(a)]
    positional = list(getattr(cls, "cli_positional", ()))
    if len(rest) > len(positional):
        parser.error(f"unexpected argument(s) {rest[len(positional):]} (overrides look like key.sub=value)")
    values.update(zip(positional, rest, strict=False))
    return load_config(cls, ns.config, overrides, values=values), switches


def execute(cmd: Command, argv: list[str]) -> int:
    """Resolve, echo, run, and save the resolved config beside the outputs."""
    cfg, switches = resolve(cmd, argv)
    if cmd.echo:
        import yaml

        text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        print(f"alignkit {cmd.path}: resolved config\n" + text.rstrip(), file=sys.stderr, flush=True)
    run = load(cmd.run) if isinstance(cmd.run, str) else cmd.run
    code = int(run(cfg, **switches) or 0)
    if code == 0 and cmd.save_to:
        target = getattr(cfg, cmd.save_to)
        target = target() if callable(target) else target
        if target:
            target = Path(target)
            dump_config(cfg, target / "config.yaml" if target.is_dir() else target.with_name(target.stem + ".config.yaml"))
    return code
