"""``alignkit eval mathusereval``, ``alignkit eval alignbench``, ``alignkit eval ifeval``, ``alignkit eval
trajectory`` and ``alignkit eval bfcl``, registered through :mod:`alignkit.commands` like every command (flags
and ``--help`` generated from the config models). Import-light: the work happens in
:mod:`alignkit.evals.mathusereval`, :mod:`alignkit.evals.alignbench`, :mod:`alignkit.evals.ifeval.run`,
:mod:`alignkit.evals.trajectory` and :mod:`alignkit.evals.bfcl`.
"""

from __future__ import annotations

import json

from alignkit.commands import Command


def _run_and_print(run, cfg, keys: tuple[str, ...]) -> int:
    """Run a judge/checker evaluation, print the headline ``keys`` of its results as JSON and where the
    results file went; a ``ValueError`` found while running (bad rows, judge settings) is a user error."""
    from rich.console import Console

    from alignkit.errors import UserError

    try:
        res = run(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({k: res[k] for k in keys}, indent=1, ensure_ascii=False))
    Console(stderr=True).print(f"results: {cfg.output_dir}/results.json")
    return 0


def mathusereval(cfg) -> int:
    from alignkit.evals.mathusereval import run_mathusereval

    return _run_and_print(run_mathusereval, cfg, ("n", "scored", "parse_failures", "micro_mean", "macro_mean",
                                                  "share_ge_7", "exact_answer"))


def alignbench(cfg) -> int:
    from alignkit.evals.alignbench import run_alignbench

    return _run_and_print(run_alignbench, cfg, ("n", "scored", "failures", "overall", "overall_interval", "groups",
                                                "micro_mean"))


def ifeval(cfg) -> int:
    from alignkit.evals.ifeval.run import run_ifeval

    return _run_and_print(run_ifeval, cfg, ("prompt_level_strict_acc", "inst_level_strict_acc",
                                            "prompt_level_loose_acc", "inst_level_loose_acc", "n_prompts",
                                            "n_instructions", "intervals"))


def trajectory(cfg) -> int:
    from rich.console import Console

    from alignkit.errors import UserError
    from alignkit.evals.trajectory import run_trajectory

    try:
        res = run_trajectory(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for task, th in res["thresholds"].items():
        print(f"{task}: chance {res['chance'][task]['chance']:.2f}, {th['status']}"
              + (f" at loss ~{th['threshold']:.4f} (between {th['bracket'][0]:.4f} and {th['bracket'][1]:.4f})"
                 if th["threshold"] is not None else ""))
    Console(stderr=True).print(f"report: {cfg.output_dir}/report.md")
    return 0


def bfcl(cfg) -> int:
    from rich.console import Console

    from alignkit.errors import UserError
    from alignkit.evals.bfcl import BfclError, run_bfcl

    try:
        res = run_bfcl(cfg)
    except BfclError as exc:
        raise UserError(str(exc)) from None
    for name, c in res["categories"].items():
        lo, hi = c["ci95"]
        print(f"{name:24s} {100 * c['accuracy']:6.2f}%  (n {c['n']}, 95% CI {100 * lo:.1f}-{100 * hi:.1f})")
    for name, g in {**res["groups"], "overall": res["overall"]}.items():
        acc = "—" if g["accuracy"] is None else f"{100 * g['accuracy']:.2f}%"
        label = name if name == "overall" else f"{name} (group)"
        print(f"{label:24s} {acc}" + (f"  (missing {', '.join(g['missing'])})" if g.get("missing") else ""))
    Console(stderr=True).print(f"results: {cfg.output_dir}/results.json, scored rows: {cfg.output_dir}/scored.jsonl "
                               f"(scored in {res['scoring_seconds']} s)")
    return 0


COMMANDS = [
    Command("eval mathusereval",
            "MathUserEval-style judge evaluation of your own question file (critique score 1-10, exact answers)",
            "alignkit.evals.mathusereval:MathUserEvalConfig", "alignkit.evals.config_commands:mathusereval",
            description="Judge answers against reference answers with the Math-Critique prompt (any judge spec); "
            "per-category dimensions, micro/macro means, share >= 7, parse failures separately. "
            "See docs/self_critique.md."),
    Command("eval alignbench",
            "AlignBench by its official protocol on your copy of the data (multi-dimensional judge, 1-10)",
            "alignkit.evals.alignbench:AlignBenchConfig", "alignkit.evals.config_commands:alignbench",
            description="Judge answers against reference answers with the AlignBench prompt of each question "
            "type (any judge spec); per-category, 中文推理/中文语言 and overall scores as show_result.py, "
            "per-dimension means, failures separately. See docs/evals.md."),
    Command("eval ifeval",
            "IFEval by the official protocol: 25 instruction checkers, strict and loose accuracies",
            "alignkit.evals.ifeval.run:IfEvalConfig", "alignkit.evals.config_commands:ifeval",
            description="Score IFEval rows (key, prompt, instruction_id_list, kwargs); rows without a "
            "'response' are answered greedily by --model. See docs/evals.md."),
    Command("eval trajectory",
            "held-out LM loss and mini-suite scores per checkpoint; score-vs-loss plot and emergence threshold",
            "alignkit.evals.trajectory:TrajectoryConfig", "alignkit.evals.config_commands:trajectory",
            description="METHODS §10b: where a task leaves chance level as the LM loss falls. "
            "See docs/self_critique.md."),
    Command("eval bfcl",
            "Berkeley Function Calling Leaderboard AST evaluation (single-turn categories, prompting mode)",
            "alignkit.evals.bfcl:BfclConfig", "alignkit.evals.config_commands:bfcl", save_to="output_dir",
            description="BFCL v4's prompt, call parser, AST checker and category/group accuracies on the data "
            "of the bfcl-eval package; generates greedily with --model or scores given outputs (--results). "
            "See docs/evals.md."),
]
