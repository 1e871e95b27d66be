"""``alignkit sft | rm | dpo | check-template``.

Each training command is ``alignkit <stage> --config FILE [key.sub=value ...]``; the config
fields (with defaults and descriptions) are listed by ``alignkit <stage> --help``.
"""

from __future__ import annotations

import argparse

RECIPES = {
    # command: (module, config class, function, help)
    "sft": ("alignkit.train.sft", "SFTConfig", "train_sft", "supervised fine-tuning on response tokens"),
    "rm": ("alignkit.train.reward", "RMConfig", "train_rm", "Bradley-Terry reward model"),
    "dpo": ("alignkit.train.preference", "PreferenceConfig", "train_preference",
            "preference optimisation: dpo | ipo | exo_pair | exo | dpo_rw"),
    "prm": ("alignkit.train.prm", "PRMConfig", "train_prm", "process reward model on stepwise rows"),
    "bon": ("alignkit.pipelines.best_of_n", "BoNConfig", "run_best_of_n",
            "best-of-N curve with an RM / PRM / verifier scorer, plus rejection-sampling SFT rows"),
}
# ``alignkit <command> <word> --config FILE key=value``: a second config-based entry under a command.
SUBCOMMANDS = {
    ("rm", "eval"): ("alignkit.train.reward_eval", "RMEvalConfig", "eval_rm",
                     "score preference pairs with a reward model: accuracy by length bucket, length bias"),
    ("prm", "label"): ("alignkit.pipelines.prm_label", "PRMLabelConfig", "label_steps",
                       "Monte-Carlo step labels (Math-Shepherd) from policy rollouts"),
}
# Flags that stand for a top-level key of a sub-command's config (``--model DIR`` == ``model=DIR``).
SUBCOMMAND_FLAGS = ("model", "data")


def _fields_epilog(module: str, cls_name: str) -> str:
    import importlib

    from alignkit.config import describe_fields

    cls = getattr(importlib.import_module(module), cls_name)
    lines = ["config keys (YAML or key.sub=value overrides):"]
    for key, default, desc in describe_fields(cls):
        first = desc.splitlines()[0] if desc else ""
        lines.append(f"  {key:34s} {default:14s} {first}")
    return "\n".join(lines)


def _run_recipe(args: argparse.Namespace) -> int:
    import importlib
    import json

    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.config import load_config
    from alignkit.data.rows import DataError
    from alignkit.generate.engine import GenerationError
    from alignkit.models import ModelError
    from alignkit.train.loop import NonFiniteError

    module, cls_name, fn_name, _ = RECIPES[args.command]
    if hasattr(args, "rest") and _reparse_rest(args):
        return 0  # help was printed
    overrides = list(args.overrides)
    sub = (args.command, overrides[0]) if overrides and "=" not in overrides[0] else None
    if sub is not None:
        if sub not in SUBCOMMANDS:
            raise UserError(f"alignkit {args.command}: unknown sub-command {sub[1]!r} "
                            f"(known: {', '.join(w for c, w in SUBCOMMANDS if c == args.command) or 'none'})")
        module, cls_name, fn_name, _ = SUBCOMMANDS[sub]
        overrides = overrides[1:] + [f"{k}={getattr(args, k)}" for k in SUBCOMMAND_FLAGS
                                     if getattr(args, k, None) is not None]
    elif any(getattr(args, k, None) is not None for k in SUBCOMMAND_FLAGS):
        raise UserError(f"alignkit {args.command}: --model/--data belong to a sub-command "
                        f"(e.g. alignkit rm eval --model DIR --data FILE)")
    mod = importlib.import_module(module)
    cfg = load_config(getattr(mod, cls_name), args.config, overrides)
    console = Console(stderr=True)
    console.print(f"[bold]alignkit {args.command}[/] resolved config:")
    console.print_json(json.dumps(cfg.model_dump(mode="json")))
    try:
        summary = getattr(mod, fn_name)(cfg, resume=args.resume)
    except (DataError, ModelError, NonFiniteError, FileNotFoundError, GenerationError) as exc:
        raise UserError(str(exc)) from None
    console.print_json(json.dumps(summary, default=str))
    if summary.get("interrupted"):
        console.print(f"stopped by {summary.get('signal')}: checkpoint saved; rerun with --resume to continue")
        return 130
    if "output_dir" in summary:
        console.print(f"outputs written to {summary['output_dir']}")
    return 0


def _reparse_rest(args: argparse.Namespace) -> bool:
    """Commands with sub-commands take everything after their first word as ``rest`` (argparse
    cannot mix a sub-command word, flags and free ``key=value`` overrides); parse it here, flags
    and overrides in any order. Returns True when help was asked for (and printed)."""
    if any(a in ("-h", "--help") for a in args.rest):
        print(args._parser.format_help())
        return True
    rp = argparse.ArgumentParser(prog=f"alignkit {args.command}", add_help=False)
    rp.add_argument("--config")
    rp.add_argument("--resume", action="store_true")
    for flag in SUBCOMMAND_FLAGS:
        rp.add_argument(f"--{flag}")
    rp.add_argument("overrides", nargs="*")
    ns = rp.parse_intermixed_args(args.rest)
    args.overrides = ns.overrides
    args.resume = args.resume or ns.resume
    for key in ("config", *SUBCOMMAND_FLAGS):
        if getattr(ns, key) is not None:
            if getattr(args, key, None) is not None:
                raise SystemExit(f"alignkit {args.command}: --{key} given twice")
            setattr(args, key, getattr(ns, key))
    return False


def _check_template(args: argparse.Namespace) -> int:
    from alignkit.cli import UserError
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import template_parity_report
    from alignkit.models import load_tokenizer

    tok = load_tokenizer(args.model)
    if args.data:
        rows = read_rows(args.data, args.kind)
        prompts = [r.prompt for r in rows if isinstance(r.prompt, list)][: args.limit]
        if not prompts:
            raise UserError(f"{args.data}: no conversational prompts to check (plain rows use no chat template)")
    else:
        prompts = [
            [{"role": "user", "content": "Hello!"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Tell me a joke."}],
            [{"role": "user", "content": "  leading and trailing spaces \n"}],
        ]
    failures = template_parity_report(tok, prompts)
    for f in failures:
        print(f"FAIL {f}")
    print(f"{len(prompts) - len({f.split(':')[0] for f in failures})}/{len(prompts)} prompts: training render "
          f"== inference render (token by token), completions end with EOS {tok.eos_token!r}")
    return 1 if failures else 0


def register(sub) -> None:
    for name, (module, cls_name, _fn, help_text) in RECIPES.items():
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"alignkit {name}: {help_text}")
        p.add_argument("--config", help="YAML recipe file")
        p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
        subs = [(w, h) for (c, w), (_m, _c, _f, h) in SUBCOMMANDS.items() if c == name]
        if not subs:
            p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, metavar="[WORD] key.sub=value",
                           help="optional sub-command word, then config overrides (flags may come anywhere)")
            p.usage = f"alignkit {name} [{'|'.join(w for w, _ in subs)}] [--config FILE] [key.sub=value ...]"
            p.description += "".join(f"\n  alignkit {name} {w} ...: {h}" for w, h in subs)
            for flag in SUBCOMMAND_FLAGS:
                p.add_argument(f"--{flag}", help=f"sub-commands: same as {flag}=VALUE")
        p.set_defaults(func=_run_recipe, _epilog=(module, cls_name), _parser=p)
        # Building the epilog imports the recipe (torch); do it only when help is asked for.
        p.format_help = _lazy_help(p, module, cls_name, [(w, SUBCOMMANDS[(name, w)][:2]) for w, _ in subs])
    p = sub.add_parser("check-template", help="prove the training render of prompts equals the inference render")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", help="check the prompts of this data file instead of built-in examples")
    p.add_argument("--kind", default="preference", choices=["sft", "preference", "kway"])
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=_check_template)


def _lazy_help(parser: argparse.ArgumentParser, module: str, cls_name: str, subs=()):
    original = parser.format_help

    def format_help() -> str:
        parser.epilog = "\n\n".join([_fields_epilog(module, cls_name)] + [
            f"alignkit {parser.prog.split()[-1]} {word}: " + _fields_epilog(*target) for word, target in subs])
        return original()

    return format_help


def config_reference_markdown() -> str:
    """The config-key tables of docs/training.md (a test keeps the doc equal to this)."""
    import importlib

    from alignkit.config import describe_fields

    parts = []
    for name, (module, cls_name, _fn, _help) in RECIPES.items():
        cls = getattr(importlib.import_module(module), cls_name)
        parts.append(f"### `alignkit {name}` keys\n\n| key | default | meaning |\n| --- | --- | --- |")
        for key, default, desc in describe_fields(cls):
            desc = " ".join(desc.split()).replace("|", "\\|")
            parts.append(f"| `{key}` | {f'`{default}`' if default else ''} | {desc} |")
        parts.append("")
    return "\n".join(parts)
