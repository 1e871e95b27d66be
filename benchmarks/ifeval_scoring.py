#!/usr/bin/env python
"""IFEval scoring throughput on precomputed responses, one core (issue 17 target: >= 5 prompts/s at the
541-prompt scale).

Builds ``--prompts`` rows (default 541) in the official format, drawing from all 25 instruction types
(1 to 3 instructions a prompt, ~1.5 on average; ~100 of them language checks, the slowest kind), each
with a generated English response of ``--words`` words (default 300) in paragraphs, with markdown,
bullets and a postscript so every checker has work to do.
Then times ``alignkit eval ifeval``'s scoring (strict + loose: up to 8 variants per instruction) on
those rows in this process, after a warm-up row that loads the Punkt parameters and the langdetect
profiles. Prints prompts/s, instructions/s and the accuracies; exit status 1 below ``--target``.

    taskset -c 0 .venv/bin/python benchmarks/ifeval_scoring.py
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from alignkit.evals.ifeval.checkers import INSTRUCTIONS
from alignkit.evals.ifeval.scoring import IfEvalRow, score_row, summarise

KWARGS = {
    "keywords:existence": {"keywords": ["ocean", "river"]},
    "keywords:frequency": {"keyword": "water", "frequency": 3, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["dry", "desert"]},
    "keywords:letter_frequency": {"letter": "q", "let_frequency": 2, "let_relation": "less than"},
    "language:response_language": {"language": "en"},
    "length_constraints:number_sentences": {"num_sentences": 20, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 4},
    "length_constraints:number_words": {"num_words": 250, "relation": "at least"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 4, "nth_paragraph": 2, "first_word": "water"},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 3},
    "combination:repeat_prompt": {"prompt_to_repeat": "Write about water."},
    "startend:end_checker": {"end_phrase": "Any other questions?"},
    "change_case:capital_word_frequency": {"capital_frequency": 5, "capital_relation": "less than"},
}
WORDS = ("water flows through the river to the ocean while people watch and the weather changes "
         "slowly over time as seasons pass and stories are told about the sea").split()
LANGUAGE_IDS = ("language:response_language", "change_case:english_capital", "change_case:english_lowercase")


def _response(rng: random.Random, words: int) -> str:
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        n = rng.randint(6, 18)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + rng.choice([".", ".", "?", "!"]))
    k = max(1, len(sentences) // 4)
    paragraphs = [" ".join(sentences[i:i + k]) for i in range(0, len(sentences), k)]
    body = "\n\n".join(paragraphs)
    extras = ["*Key point* about [place] and [time].", "* first\n* second\n- third", "Section 1 ... Section 2"]
    text = rng.choice(["Write about water. ", "", "Sure, here it is:\n"]) + body + "\n\n" + rng.choice(extras)
    return text + rng.choice(["\n\nP.S. Any other questions?", "\n\nAny other questions?", ""])


def build_rows(n: int, words: int, seed: int = 0) -> tuple[list[IfEvalRow], list[str]]:
    rng = random.Random(seed)
    ids = sorted(INSTRUCTIONS)
    rows, responses = [], []
    for i in range(n):
        k = rng.choices([1, 2, 3], weights=[60, 30, 10])[0]
        chosen = rng.sample(ids, k)  # 3 of the 25 ids detect the language: ~100 checks per 541 prompts
        rows.append(IfEvalRow(i, "Write about water.", chosen, [KWARGS.get(c, {}) for c in chosen]))
        response = _response(rng, words)
        responses.append(response.upper() if "change_case:english_capital" in chosen and i % 2 else response)
    return rows, responses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=541)
    ap.add_argument("--words", type=int, default=300)
    ap.add_argument("--target", type=float, default=5.0, help="prompts/s below which the exit status is 1")
    args = ap.parse_args()
    rows, responses = build_rows(args.prompts, args.words)
    score_row(rows[0], responses[0])  # warm-up: Punkt parameters, langdetect profiles
    t = time.perf_counter()
    scored = [score_row(r, resp) for r, resp in zip(rows, responses, strict=True)]
    dt = time.perf_counter() - t
    res = summarise(scored)
    n_inst = res["n_instructions"]
    print(f"{len(rows)} prompts, {n_inst} instructions, ~{args.words} words a response: {dt:.2f} s")
    print(f"{len(rows) / dt:.1f} prompts/s, {n_inst / dt:.1f} instructions/s (target >= {args.target} prompts/s)")
    print({k: round(res[k], 4) for k in ("prompt_level_strict_acc", "inst_level_strict_acc",
                                         "prompt_level_loose_acc", "inst_level_loose_acc")})
    return 0 if len(rows) / dt >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
