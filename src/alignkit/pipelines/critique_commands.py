"""``alignkit pipeline self-critique | self-reflect`` and ``alignkit critic train``, registered through
:mod:`alignkit.commands` like every command (flags and ``--help`` generated from the config models).
Each pipeline saves its resolved config in its output directory; unchanged stages are reused on a rerun.
"""

from __future__ import annotations

from alignkit.commands import Command, Group


def _report(results: dict, output_dir: str) -> int:
    from rich.console import Console

    Console(stderr=True).print(f"done in {results.get('total_seconds', 0):.0f} s; report: {output_dir}/report.md")
    return 0


def self_critique(cfg) -> int:
    from alignkit.pipelines.self_critique import run_self_critique

    return _report(run_self_critique(cfg), cfg.output_dir)


def self_reflect(cfg) -> int:
    from alignkit.pipelines.self_reflect import run_self_reflect

    return _report(run_self_reflect(cfg), cfg.output_dir)


def critic_train(cfg) -> int:
    from alignkit.pipelines.critic_train import run_critic_train

    return _report(run_critic_train(cfg), cfg.output_dir)


COMMANDS = [
    Command("pipeline self-critique", "Critique-RFT -> Critique-DPO on math questions, with a before/after report",
            "alignkit.pipelines.self_critique:SelfCritiqueConfig", "alignkit.pipelines.critique_commands:self_critique",
            description="ChatGLM-Math's Self-Critique loop (configs/self_critique_smollm2.yaml, docs/self_critique.md)."),
    Command("pipeline self-reflect", "SciGLM self-reflective annotation: CoT -> check -> revise with the answer "
            "hint -> recheck -> optional classifier filter -> SFT rows with provenance",
            "alignkit.pipelines.self_reflect:SelfReflectConfig", "alignkit.pipelines.critique_commands:self_reflect",
            description="configs/self_reflect_smollm2.yaml, docs/self_critique.md."),
    Group("critic", "Math-Critique critics: train one from the policy"),
    Command("critic train", "SFT of the policy into a Math-Critique critic on rows labelled by the verifier or "
            "a stronger judge", "alignkit.pipelines.critic_train:CriticTrainConfig",
            "alignkit.pipelines.critique_commands:critic_train",
            description="configs/critic_smollm2.yaml, docs/self_critique.md."),
]
