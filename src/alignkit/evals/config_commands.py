"""``alignkit eval mathusereval`` and ``alignkit eval trajectory``: eval subcommands in the config +
dotted-overrides style (``--config FILE key.sub=value``), with a few shortcut flags that become
overrides. Import-light: the work happens in :mod:`alignkit.evals.mathusereval` and
:mod:`alignkit.evals.trajectory`.
"""

from __future__ import annotations

import argparse
import json


def _print_config(console, title: str, cfg) -> None:
    console.print(f"[bold]{title}[/] resolved config:")
    console.print_json(json.dumps(cfg.model_dump(mode="json")))


def _cmd_mathusereval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from alignkit.config import load_config
    from alignkit.errors import UserError
    from alignkit.evals.mathusereval import MathUserEvalConfig, run_mathusereval
    from alignkit.generate.engine import GenerationError
    from alignkit.generate.jsonl import RecordError
    from alignkit.models import ModelError

    shortcuts = [f"{k}={json.dumps(v)}" for k, v in (("data", args.data), ("model", args.model)) if v]
    if args.judge:
        shortcuts.append(f"judge.spec={json.dumps(args.judge)}")
    cfg = load_config(MathUserEvalConfig, args.config, [*shortcuts, *args.overrides])
    console = Console(stderr=True)
    _print_config(console, "alignkit eval mathusereval", cfg)
    try:
        res = run_mathusereval(cfg)
    except (RecordError, GenerationError, ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    ex = res["exact_answer"]
    print(json.dumps({k: res[k] for k in ("n", "scored", "parse_failures", "micro_mean", "macro_mean",
                                         "share_ge_7")} | {"exact_answer": ex}, indent=1))
    console.print(f"results: {cfg.output_dir}/results.json")
    return 0


def _cmd_trajectory(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from alignkit.config import load_config
    from alignkit.errors import DataError, UserError
    from alignkit.evals.trajectory import TrajectoryConfig, run_trajectory
    from alignkit.models import ModelError

    # --checkpoints takes many paths (a shell glob), so dotted overrides may land in it: split them off
    ckpts = [c for c in args.checkpoints or [] if "=" not in c or Path(c).exists()]
    overrides = [c for c in args.checkpoints or [] if c not in ckpts] + list(args.overrides)
    shortcuts = [f"checkpoints={json.dumps(ckpts)}"] if ckpts else []
    if args.tasks:
        shortcuts.append(f"tasks={json.dumps([t.strip() for t in args.tasks.split(',') if t.strip()])}")
    for key in ("corpus", "output_dir"):
        if getattr(args, key):
            shortcuts.append(f"{key}={json.dumps(getattr(args, key))}")
    cfg = load_config(TrajectoryConfig, args.config, [*shortcuts, *overrides])
    console = Console(stderr=True)
    _print_config(console, "alignkit eval trajectory", cfg)
    try:
        res = run_trajectory(cfg)
    except (DataError, ModelError, FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    for task, th in res["thresholds"].items():
        print(f"{task}: chance {res['chance'][task]['chance']:.2f}, {th['status']}"
              + (f" at loss ~{th['threshold']:.4f} (between {th['bracket'][0]:.4f} and {th['bracket'][1]:.4f})"
                 if th["threshold"] is not None else ""))
    console.print(f"report: {cfg.output_dir}/report.md")
    return 0


def register(sub) -> None:
    """Add the subcommands to ``alignkit eval``'s subparsers (``--help`` lists every config key)."""
    from alignkit.train.cli import _lazy_help

    m = sub.add_parser(
        "mathusereval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="MathUserEval-style judge evaluation of your own question file (critique score 1-10, exact answers)",
        description="Judge answers against reference answers with the Math-Critique prompt (any judge spec); "
        "per-category dimensions, micro/macro means, share >= 7, parse failures separately. See docs/self_critique.md.",
    )
    m.add_argument("--config", default=None, help="YAML with MathUserEvalConfig fields")
    m.add_argument("--data", default=None, help="MathUserEval-format JSONL (overrides data)")
    m.add_argument("--judge", default=None, help="local:<model> or openai:<base_url>#<model> (judge.spec)")
    m.add_argument("--model", default=None, help="answers rows without 'response' (overrides model)")
    m.add_argument("overrides", nargs="*", help="dotted overrides, e.g. critique.attempts=5 official_minus_one=true")
    m.set_defaults(func=_cmd_mathusereval)
    m.format_help = _lazy_help(m, "alignkit.evals.mathusereval", "MathUserEvalConfig")

    t = sub.add_parser(
        "trajectory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="held-out LM loss and mini-suite scores per checkpoint; score-vs-loss plot and emergence threshold",
        description="METHODS §10b: where a task leaves chance level as the LM loss falls. See docs/self_critique.md.",
    )
    t.add_argument("--config", default=None, help="YAML with TrajectoryConfig fields")
    t.add_argument("--checkpoints", nargs="+", default=None, help="checkpoint directories (a glob is fine)")
    t.add_argument("--tasks", default=None, help="'mini' (all mini-suite tasks) or comma-separated task names")
    t.add_argument("--corpus", default=None, help="'pydoc' or a .txt / JSONL {text} file for the LM loss")
    t.add_argument("--output-dir", dest="output_dir", default=None)
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. margin=2 samples_per_length=4")
    t.set_defaults(func=_cmd_trajectory)
    t.format_help = _lazy_help(t, "alignkit.evals.trajectory", "TrajectoryConfig")
