"""``alignkit pipeline <name> --config FILE [key.sub=value ...]``: multi-stage flows."""

from __future__ import annotations

import argparse


def _cmd_longreward(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.config import load_config
    from alignkit.data.rows import DataError
    from alignkit.generate.engine import GenerationError
    from alignkit.generate.jsonl import RecordError
    from alignkit.models import ModelError
    from alignkit.pipelines.longreward import LongRewardPipelineConfig, PipelineError, run_longreward_pipeline

    cfg = load_config(LongRewardPipelineConfig, args.config, args.overrides)
    console = Console(stderr=True)
    console.print("[bold]alignkit pipeline longreward[/] resolved config:")
    console.print_json(json.dumps(cfg.model_dump(mode="json")))
    try:
        results = run_longreward_pipeline(cfg)
    except (PipelineError, RecordError, DataError, GenerationError, ModelError) as exc:
        raise UserError(str(exc)) from None
    ev = results.get("evaluation", {})
    if ev.get("judge_before"):
        b, a = ev["judge_before"]["reward"], ev["judge_after"]["reward"]
        console.print(f"held-out judge reward: before {b}, after {a}")
    console.print(f"done in {results['total_seconds']:.0f} s; report: {cfg.output_dir}/report.md")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="multi-stage pipelines (longreward, self-critique, self-reflect)")
    psub = p.add_subparsers(dest="pipeline_command", metavar="PIPELINE", required=True)
    lr = psub.add_parser(
        "longreward",
        help="sample K -> LongReward judge scores -> pairs -> DPO(+NLL) -> before/after report",
        description="Runs every LongReward stage with one config (see configs/longreward_smollm2.yaml and "
        "docs/longreward.md). Unchanged stages are reused on a rerun of the same output_dir.",
    )
    lr.add_argument("--config", default=None, help="pipeline YAML (defaults apply to missing keys)")
    lr.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. sampling.k=4 judge.spec=openai:URL#model"
    )
    lr.set_defaults(func=_cmd_longreward)

    from alignkit.pipelines.critique_commands import register as register_critique

    register_critique(sub, psub)  # pipeline self-critique | self-reflect, critic train
