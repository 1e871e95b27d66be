"""Judge prompt texts, stored as files beside this module (English ``.en.txt`` and Chinese ``.zh.txt``).

All texts and few-shot examples are our own, except ``math_critique_official``: our English and Chinese
paraphrase of the official MathUserEval judge prompt (github.com/THUDM/ChatGLM-Math, ``judge.py`` and
``config/dimension_*.json``, MIT licence), which keeps its procedure, dimensions, score bands and output
format; and ``alignbench``: our Chinese paraphrase of the AlignBench judge prompt (github.com/THUDM/AlignBench,
``judge.py``; the repository has no licence, so nothing is copied), same structure, scale and output format,
the dimension list filled in per question type by :mod:`alignkit.evals.alignbench`. Placeholders are
``<<name>>``; :func:`fill` substitutes them in a single pass over the template, so user text that happens to
contain ``<<answer>>`` is never expanded.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_DIR = Path(__file__).parent
_PLACEHOLDER = re.compile(r"<<([a-z_]+)>>")


@cache
def load_prompt(name: str, lang: str) -> str:
    """The template ``<name>.<lang>.txt`` (for example ``longreward_helpfulness``, ``en``)."""
    path = _DIR / f"{name}.{lang}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"judge prompt {path.name} not found in {_DIR}")
    return path.read_text(encoding="utf-8")


def placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, **values: str) -> str:
    """Substitute every ``<<name>>``; a missing or unused value is an error (catches template typos)."""
    wanted = placeholders(template)
    if wanted != set(values):
        raise KeyError(f"template needs {sorted(wanted)}, got {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
