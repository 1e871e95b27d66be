"""The bundled long-context prompt set: provenance, determinism, sizes."""

from __future__ import annotations

import sys

from alignkit.pipelines.longreward_prompts import (
    TOPICS,
    build_pydoc_prompts,
    bundled_prompts,
    question_for,
)


def test_bundled_rows_are_verbatim_documents_with_generated_questions(embedded_tokenizer):
    tokenizer = embedded_tokenizer  # the length budget is in the embedded model's tokens
    rows = bundled_prompts()
    assert [r["id"] for r in rows] == [f"pydoc-{t}" for t in TOPICS]
    assert len({r["query"] for r in rows}) == len(rows)
    for r in rows:
        assert r["question_type"] in ("section", "grammar", "overview")
        assert r["source"].startswith("pydoc_data.topics[")
        # the question is the deterministic function of the document it claims to come from
        assert question_for(r["id"].removeprefix("pydoc-"), r["context"]) == (r["question_type"], r["query"])
        n = len(tokenizer(r["context"], add_special_tokens=False).input_ids)
        assert 1000 <= n <= 2800, (r["id"], n)  # fits the embedded 8k model with room for the judge


def test_generator_reproduces_the_shipped_file_on_its_python():
    shipped = bundled_prompts()
    fresh = build_pydoc_prompts()
    assert [r["id"] for r in fresh] == [r["id"] for r in shipped]
    if f"{sys.version_info.major}.{sys.version_info.minor}" == shipped[0]["python"]:
        assert fresh == shipped
    else:  # other CPython versions edit the docs; the question rules still apply to them
        assert all(r["context"] and r["query"] for r in fresh)


def test_question_rules():
    doc = "Title here\n**********\n\nIntro.\n\nFirst part\n==========\n\nrule ::= a b\n\nSecond part\n-----------\n"
    kinds = {question_for(t, doc)[0] for t in ("a", "b", "c", "d", "e", "f")}
    assert kinds <= {"section", "grammar", "overview"} and len(kinds) >= 2
    assert question_for("x", "Plain title\n\nno headings") == (
        "overview",
        'The document is titled "Plain title". What does it describe, and what is that used for?',
    )
