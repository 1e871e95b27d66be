"""A deterministic stand-in for the generation engine: continuations come from a rule, not a model."""

from __future__ import annotations

from alignkit.generate.engine import Completion, GenerationResult


class RuleEngine:
    """``rule(prompt, index) -> text`` gives completion ``index`` of a prompt; every call is recorded."""

    def __init__(self, rule):
        self.rule = rule
        self.calls = []

    def generate(self, prompts, params, *, apply_chat_template=True, progress=False, seeds=None):
        self.calls.append((list(prompts), params))
        return [GenerationResult(prompt=str(p), prompt_tokens=1,
                                 completions=[Completion(text=self.rule(p, j), token_ids=[0], finish_reason="stop")
                                              for j in range(params.n)])
                for p in prompts]
