"""The bundled long-context prompt set for the LongReward demo: questions over CPython's documentation.

Provenance: every context is one document of ``pydoc_data.topics`` (the reference-manual topics that
ship with CPython, PSF licence), taken verbatim. The questions are made by the deterministic code
below from each document's own structure, with no model involved:

* ``section``: a sub-heading of the document (a line underlined with ``=``, ``-`` or ``*``) is asked
  about — "What does the section "<heading>" of the document explain?";
* ``grammar``: when the document gives a grammar production (``name ::= ...``), its meaning is asked;
* ``overview``: otherwise, what the titled document describes and what that is used for.

The question type of a document is the first available of a rotation that starts at
``sha256(topic) mod 3``, and a ``section`` question takes the sub-heading at the same hash index, so
a topic always gets the same question. The documents are 1-2.7k tokens for the embedded model's
tokenizer, so a prompt plus answer fits its 8k context with room for the judge's prompts.

The set is generated once and shipped as ``longreward_pydoc.jsonl`` (each row records the Python
version it came from); :func:`build_pydoc_prompts` regenerates it from the running Python, and a test
checks that it reproduces the shipped file on the same Python minor version.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

BUNDLED_FILE = Path(__file__).with_name("longreward_pydoc.jsonl")

# Topics of 1k-2.7k SmolLM2 tokens, in a fixed order: the demo trains on the first ones and holds
# out the last ones for evaluation.
TOPICS = (
    "try",
    "import",
    "function",
    "calls",
    "assignment",
    "comparisons",
    "naming",
    "execmodel",
    "async",
    "identifiers",
    "objects",
    "operator-summary",
    "numeric-types",
    "sequence-types",
    "typesseq-mutable",
    "strings",
)

_UNDERLINE = re.compile(r"^([=\-*])\1{2,}\s*$")
_PRODUCTION = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*::=", re.M)


def _headings(text: str) -> tuple[str, list[str]]:
    """(title, sub-headings): lines followed by an underline of the same length."""
    lines = text.splitlines()
    found = []
    for i in range(len(lines) - 1):
        line = lines[i].strip()
        if line and _UNDERLINE.match(lines[i + 1]) and abs(len(lines[i + 1].strip()) - len(line)) <= 2:
            found.append(line)
    if not found:
        return lines[0].strip(), []
    return found[0], found[1:]


def question_for(topic: str, text: str) -> tuple[str, str]:
    """(question type, question) for one documentation topic (deterministic)."""
    title, sections = _headings(text)
    productions = _PRODUCTION.findall(text)
    h = int(hashlib.sha256(topic.encode()).hexdigest(), 16)
    order = ["section", "grammar", "overview"]
    order = order[h % 3 :] + order[: h % 3]
    for kind in order:
        if kind == "section" and sections:
            heading = sections[h % len(sections)]
            return (
                kind,
                f'What does the section "{heading}" of the document explain? Answer in a few sentences.',
            )
        if kind == "grammar" and productions:
            return kind, (
                f'The document gives a grammar rule for "{productions[0]}". What does this rule allow you to '
                "write, according to the document?"
            )
        if kind == "overview":
            return (
                kind,
                f'The document is titled "{title}". What does it describe, and what is that used for?',
            )
    raise AssertionError("unreachable: overview always applies")


def build_pydoc_prompts(topics: tuple[str, ...] = TOPICS) -> list[dict[str, Any]]:
    """The prompt rows ``{id, context, query, question_type, source, python}`` from the running CPython."""
    from pydoc_data.topics import topics as docs

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    rows = []
    for topic in topics:
        if topic not in docs:
            raise KeyError(f"pydoc_data.topics of Python {version} has no topic {topic!r}")
        text = docs[topic]
        kind, query = question_for(topic, text)
        rows.append(
            {
                "id": f"pydoc-{topic}",
                "context": text,
                "query": query,
                "question_type": kind,
                "source": f"pydoc_data.topics[{topic!r}] (CPython {version} documentation, PSF licence)",
                "python": version,
            }
        )
    return rows


def bundled_prompts() -> list[dict[str, Any]]:
    """The shipped prompt rows (independent of the running Python version)."""
    from alignkit.data.records import read_objects

    return [rec.value for rec in read_objects(BUNDLED_FILE)]


def write_bundled(path: Path = BUNDLED_FILE) -> int:
    """Regenerate the shipped file (maintainers: run once per Python upgrade of the shipped set)."""
    rows = build_pydoc_prompts()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)
