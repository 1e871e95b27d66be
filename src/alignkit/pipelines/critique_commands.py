"""``alignkit pipeline self-critique | self-reflect`` and ``alignkit critic train``.

Each is ``--config FILE`` plus dotted overrides onto a strict config model; the library entry point
takes the config object and returns a summary dict. Import-light: the work happens in the modules named
in ``COMMANDS``.
"""

from __future__ import annotations

import argparse

COMMANDS = {
    # name: (module, config class, function, help, example config)
    "self-critique": ("alignkit.pipelines.self_critique", "SelfCritiqueConfig", "run_self_critique",
                      "Critique-RFT -> Critique-DPO on math questions, with a before/after report",
                      "configs/self_critique_smollm2.yaml"),
    "self-reflect": ("alignkit.pipelines.self_reflect", "SelfReflectConfig", "run_self_reflect",
                     "SciGLM self-reflective annotation: CoT -> check -> revise with the answer hint -> recheck "
                     "-> optional classifier filter -> SFT rows with provenance",
                     "configs/self_reflect_smollm2.yaml"),
    "critic-train": ("alignkit.pipelines.critic_train", "CriticTrainConfig", "run_critic_train",
                     "SFT of the policy into a Math-Critique critic on rows labelled by the verifier or a stronger judge",
                     "configs/critic_smollm2.yaml"),
}


def _run(args: argparse.Namespace) -> int:
    import importlib
    import json

    from rich.console import Console

    from alignkit.config import load_config
    from alignkit.errors import DataError, UserError
    from alignkit.generate.engine import GenerationError
    from alignkit.generate.jsonl import RecordError
    from alignkit.models import ModelError
    from alignkit.pipelines.longreward import PipelineError
    from alignkit.train.loop import NonFiniteError

    module, cls_name, fn_name, _, _ = COMMANDS[args.critique_command]
    mod = importlib.import_module(module)
    cfg = load_config(getattr(mod, cls_name), args.config, args.overrides)
    console = Console(stderr=True)
    console.print(f"[bold]alignkit {args.critique_command}[/] resolved config:")
    console.print_json(json.dumps(cfg.model_dump(mode="json")))
    try:
        results = getattr(mod, fn_name)(cfg)
    except (PipelineError, RecordError, DataError, GenerationError, ModelError, NonFiniteError) as exc:
        raise UserError(str(exc)) from None
    console.print(f"done in {results.get('total_seconds', 0):.0f} s; report: {cfg.output_dir}/report.md")
    return 0


def _add(sub, name: str, as_name: str) -> None:
    from alignkit.train.cli import _lazy_help

    module, cls_name, _fn, help_text, example = COMMANDS[name]
    p = sub.add_parser(as_name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=f"{help_text}. Example config: {example}; see docs/self_critique.md. "
                       "Unchanged stages are reused on a rerun of the same output_dir.")
    p.format_help = _lazy_help(p, module, cls_name)  # lists every config key (imports the module on --help)
    p.add_argument("--config", default=None, help="YAML config (defaults apply to missing keys)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sampling.k=4 critic.kind=judge")
    p.set_defaults(func=_run, critique_command=name)


def register(sub, pipeline_sub) -> None:
    """``sub``: the top-level subparsers (``critic``); ``pipeline_sub``: those of ``alignkit pipeline``."""
    for name in COMMANDS:
        if name != "critic-train":
            _add(pipeline_sub, name, name)
    critic = sub.add_parser("critic", help="Math-Critique critics: train one from the policy")
    _add(critic.add_subparsers(dest="critic_command", metavar="COMMAND", required=True), "critic-train", "train")
