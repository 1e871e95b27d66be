"""``alignkit sft | rm | rm eval | dpo | prm | prm label | rl | check-template``.

Each training command is ``alignkit <stage> --config FILE [key.sub=value ...]``; the config
fields (with defaults and descriptions) are listed by ``alignkit <stage> --help``.
"""

from __future__ import annotations

import functools
from typing import Literal

from alignkit.commands import Command, load
from alignkit.config import StrictModel

RECIPES = {
    # command: (module, config class, function, help)
    "sft": ("alignkit.train.sft", "SFTConfig", "train_sft", "supervised fine-tuning on response tokens"),
    "rm": ("alignkit.train.reward", "RMConfig", "train_rm", "Bradley-Terry reward model"),
    "dpo": ("alignkit.train.preference", "PreferenceConfig", "train_preference",
            "preference optimisation: dpo | ipo | exo_pair | exo | dpo_rw"),
    "prm": ("alignkit.train.prm", "PRMConfig", "train_prm", "process reward model on stepwise rows"),
    "rl": ("alignkit.train.rl", "RLConfig", "train_rl",
           "online RL: PPO (critic + GAE), GRPO, RLOO with ChatGLM-RLHF's stabilisers"),
}

_RESUME = (("resume", "continue from the latest checkpoint in train.output_dir"),)


def run_recipe(name: str, cfg, resume: bool = False) -> int:
    """Run the training recipe ``name`` of :data:`RECIPES` on ``cfg`` and print its summary."""
    import json

    from rich.console import Console

    module, _cls, fn_name, _help = RECIPES[name]
    summary = load(f"{module}:{fn_name}")(cfg, resume=resume)
    console = Console(stderr=True)
    console.print_json(json.dumps(summary, default=str))
    if summary.get("interrupted"):
        console.print(f"stopped by {summary.get('signal')}: checkpoint saved; rerun with --resume to continue")
        return 130
    console.print(f"model written to {summary['output_dir']}")
    return 0


class CheckTemplateConfig(StrictModel):
    """``alignkit check-template``: the training render of prompts equals the inference render."""

    model: str = "smollm2-135m-instruct"
    """Model (tokenizer and chat template) to check: embedded name, HF dir or hub id."""
    data: str | None = None
    """Check the prompts of this data file instead of built-in examples."""
    kind: Literal["sft", "preference", "kway"] = "preference"
    """Row kind of ``data``."""
    limit: int = 200
    """Check at most this many prompts of ``data``."""


TOOL_EXAMPLE_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOL_EXAMPLE = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": '{"temp_c": 21, "sky": "clear"}', "tool_call_id": "call_1"},
    {"role": "assistant", "content": "It is 21 °C and clear in Paris."},
]


def check_template(cfg: CheckTemplateConfig) -> int:
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import conversation_parity_report, template_parity_report
    from alignkit.data.toolcalls import Conversation
    from alignkit.errors import UserError
    from alignkit.generate.engine import encode_prompt
    from alignkit.models import load_tokenizer

    tok = load_tokenizer(cfg.model)
    if cfg.data:
        rows = [r for r in read_rows(cfg.data, cfg.kind) if isinstance(r.prompt, list)][: cfg.limit]
        prompts = [r.prompt for r in rows]
        if not prompts:
            raise UserError(f"{cfg.data}: no conversational prompts to check (plain rows use no chat template)")
        # rows with tools or several assistant turns: every turn of the whole conversation is checked
        conversations = [(list(r.prompt) + list(r.completions[0]), r.tools) for r in rows
                         if r.tools or sum(m["role"] == "assistant" for m in r.completions[0]) > 1]
    else:
        prompts = [
            [{"role": "user", "content": "Hello!"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Tell me a joke."}],
            [{"role": "user", "content": "  leading and trailing spaces \n"}],
        ]
        conversations = [(TOOL_EXAMPLE, TOOL_EXAMPLE_TOOLS),
                         ([{"role": "system", "content": "Be brief."}, *TOOL_EXAMPLE], TOOL_EXAMPLE_TOOLS)]
    failures = template_parity_report(tok, prompts)
    for f in failures:
        print(f"FAIL {f}")
    print(f"{len(prompts) - len({f.split(':')[0] for f in failures})}/{len(prompts)} prompts: training render "
          f"== inference render (token by token), completions end with EOS {tok.eos_token!r}")
    if conversations:
        tool_failures = conversation_parity_report(
            tok, conversations, lambda msgs, tools: encode_prompt(tok, Conversation(msgs, tools), True)[1])
        for f in tool_failures:
            print(f"FAIL {f}")
        bad = len({f.split(",")[0].split(":")[0] for f in tool_failures})
        print(f"{len(conversations) - bad}/{len(conversations)} tool/multi-turn conversations: before every "
              "assistant turn the training ids == the inference render's; trained turns parse back into their "
              "tool calls")
        failures += tool_failures
    return 1 if failures else 0


# The recipes save their resolved config in train.output_dir themselves (it is part of a checkpoint).
COMMANDS = [
    *(Command(name, help_text, f"{module}:{cls_name}", functools.partial(run_recipe, name),
              description=f"alignkit {name}: {help_text}", switches=_RESUME)
      for name, (module, cls_name, _fn, help_text) in RECIPES.items()),
    Command("check-template", "prove the training render of prompts equals the inference render",
            "alignkit.train.cli:CheckTemplateConfig", "alignkit.train.cli:check_template", echo=False),
    Command("rm eval", "score preference pairs with a reward model: accuracy by length bucket, length bias",
            "alignkit.train.reward_eval:RMEvalConfig", "alignkit.train.cli:rm_eval", save_to="output_file"),
    Command("prm label", "Monte-Carlo step labels (Math-Shepherd) from policy rollouts",
            "alignkit.pipelines.prm_label:PRMLabelConfig", "alignkit.train.cli:prm_label", save_to="output_dir"),
]


def print_summary(summary: dict) -> int:
    """Print a command's summary dict as JSON on stderr (exit code 0)."""
    import json

    from rich.console import Console

    Console(stderr=True).print_json(json.dumps(summary, default=str))
    return 0


def rm_eval(cfg) -> int:
    return print_summary(load("alignkit.train.reward_eval:eval_rm")(cfg))


def prm_label(cfg) -> int:
    return print_summary(load("alignkit.pipelines.prm_label:label_steps")(cfg))


def config_reference_markdown(commands: tuple[str, ...] = ("sft", "rm", "dpo", "prm")) -> str:
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
