"""``alignkit pipeline <name> --config FILE [key.sub=value ...]`` and ``alignkit demo``: multi-stage flows."""

from __future__ import annotations

from alignkit.commands import Command, Group


def longreward(cfg) -> int:
    from rich.console import Console

    from alignkit.pipelines.longreward import run_longreward_pipeline

    results = run_longreward_pipeline(cfg)
    console = Console(stderr=True)
    ev = results.get("evaluation", {})
    if ev.get("judge_before"):
        b, a = ev["judge_before"]["reward"], ev["judge_after"]["reward"]
        console.print(f"held-out judge reward: before {b}, after {a}")
    console.print(f"done in {results['total_seconds']:.0f} s; report: {cfg.output_dir}/report.md")
    return 0


def demo(cfg) -> int:
    from alignkit.pipelines.demo import run_demo

    run_demo(cfg)
    return 0


def bon(cfg) -> int:
    import json
    from pathlib import Path

    from rich.console import Console

    from alignkit.pipelines.best_of_n import run_best_of_n

    summary = run_best_of_n(cfg)
    console = Console(stderr=True)
    console.print_json(json.dumps(summary))
    console.print((Path(cfg.output_dir) / "curve.md").read_text())
    return 0


# Both pipelines save their resolved config in their output directory themselves.
COMMANDS = [
    Command("demo", "SFT -> preference data -> DPO -> GRPO on the embedded model, with a before/after report",
            "alignkit.pipelines.demo:DemoConfig", "alignkit.pipelines.cli:demo",
            description="The verifiable-instruction job of configs/demo.yaml: baseline pass rate, SFT on the base "
            "model's passing samples, verified on-policy pairs, DPO, GRPO with the verifier reward (rl: null "
            "skips it), evaluation of every model, report. The sft / dpo / rl sections are alignkit sft / dpo / "
            "rl configs (e.g. dpo.loss.beta=0.2 rl.rollout.n=8); their model.name_or_path, data.train and "
            "train.output_dir are set by the demo, and their other defaults are configs/demo.yaml's. A rerun "
            "of the same output_dir reuses the unchanged stages."),
    Command("bon", "best-of-N curve with an RM / PRM / verifier scorer, plus rejection-sampling SFT rows",
            "alignkit.pipelines.best_of_n:BoNConfig", "alignkit.pipelines.cli:bon", save_to="output_dir",
            description="Sample n_max solutions per problem once, select by the scorer for every N, write the "
            "curve (curve.md, curve.png) and the selected samples as SFT rows (docs/reward_models.md)."),
    Group("pipeline", "multi-stage pipelines (longreward, self-critique, self-reflect)"),
    Command("pipeline longreward", "sample K -> LongReward judge scores -> pairs -> DPO(+NLL) -> before/after report",
            "alignkit.pipelines.longreward:LongRewardPipelineConfig", "alignkit.pipelines.cli:longreward",
            description="Runs every LongReward stage with one config (see configs/longreward_smollm2.yaml and "
            "docs/longreward.md). Unchanged stages are reused on a rerun of the same output_dir."),
]
