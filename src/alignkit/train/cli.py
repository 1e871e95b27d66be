"""``alignkit sft | rm | dpo | rl | check-template``.

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
    "rl": ("alignkit.train.rl", "RLConfig", "train_rl",
           "online RL: PPO (critic + GAE), GRPO, RLOO with ChatGLM-RLHF's stabilisers"),
}


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
    mod = importlib.import_module(module)
    cfg = load_config(getattr(mod, cls_name), args.config, args.overrides)
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
    console.print(f"model written to {summary['output_dir']}")
    return 0


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
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
        p.set_defaults(func=_run_recipe, _epilog=(module, cls_name))
        # Building the epilog imports the recipe (torch); do it only when help is asked for.
        p.format_help = _lazy_help(p, module, cls_name)
    p = sub.add_parser("check-template", help="prove the training render of prompts equals the inference render")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", help="check the prompts of this data file instead of built-in examples")
    p.add_argument("--kind", default="preference", choices=["sft", "preference", "kway"])
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=_check_template)


def _lazy_help(parser: argparse.ArgumentParser, module: str, cls_name: str):
    original = parser.format_help

    def format_help() -> str:
        parser.epilog = _fields_epilog(module, cls_name)
        return original()

    return format_help


def config_reference_markdown(commands: tuple[str, ...] = ("sft", "rm", "dpo")) -> str:
    """The config-key tables of docs/training.md (``rl``: docs/rl.md); a test keeps the docs equal to this."""
    import importlib

    from alignkit.config import describe_fields

    parts = []
    for name in commands:
        module, cls_name, _fn, _help = RECIPES[name]
        cls = getattr(importlib.import_module(module), cls_name)
        parts.append(f"### `alignkit {name}` keys\n\n| key | default | meaning |\n| --- | --- | --- |")
        for key, default, desc in describe_fields(cls):
            desc = " ".join(desc.split()).replace("|", "\\|")
            parts.append(f"| `{key}` | {f'`{default}`' if default else ''} | {desc} |")
        parts.append("")
    return "\n".join(parts)
