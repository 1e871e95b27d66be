"""alignkit's IFEval checkers against the reference (lm-eval's ``tasks/ifeval`` code as the oracle):
every instruction type, with arguments and responses built around each checker's boundaries, must get
the same strict and loose verdict; the four metrics must equal lm-eval's aggregation.

Arguments here are never falsy: lm-eval drops falsy kwargs (``if v``), so a 0 or "" would make it draw
a random value (alignkit drops only ``None``, as the published data needs; see docs/evals.md)."""

from __future__ import annotations

import itertools

import pytest
from tests.evals.ifeval_oracle import lm_eval_ifeval

from alignkit.evals.ifeval.checkers import INSTRUCTIONS
from alignkit.evals.ifeval.scoring import (
    IfEvalRow,
    follow_loose,
    follow_strict,
    row_checks,
    score_row,
    summarise,
)

PROMPT = "Write about the sea. Repeat this request first."


def _words(n: int) -> str:
    return " ".join(["word"] * n)


def _sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))


# Responses around the boundaries: counts just below, at and above the thresholds used in CONFIGS;
# markdown that loose scoring changes (asterisks, a preamble line, a closing line).
RESPONSES = [
    "", "   ", "\n", "*", "**", "a", "A", "Hello, world.", "hello world", "HELLO WORLD",
    _words(2), _words(3), _words(4), _words(9), _words(10), _words(11),
    _sentences(1), _sentences(2), _sentences(3), _sentences(4),
    "Dr. Smith went to Washington D.C. on Jan. 5. He met Mr. J. R. Jones at 5 p.m. It was 3.5 hours long.",
    "Wait... what? No!! Really?! Yes.",
    "First paragraph.\n\nSecond paragraph.\n\nThird paragraph.",
    "Sure, here it is:\nFirst paragraph.\n\nSecond paragraph.\nHope this helps!",
    "\n\n\n\nStarts late.\n\n\n\nThen more.",
    "One *** Two *** Three",
    "*** One *** Two ***",
    "One *** *** Two",
    "One***Two***Three***Four",
    '"Hello," she said.\n\nWorld peace matters.\n\n"hello" again.',
    "'Quoted' start.\n\nsecond",
    "* point one\n* point two\n* point three",
    "* point one\n- point two\n  * point three\n**bold line**\n-dash",
    "Intro line\n* a\n* b\nOutro line",
    # loose-only passes where exactly one of the 8 variants passes:
    "Sure:\nWrite *about* the sea.",  # first line removed (repeat_prompt with a '*')
    "The *end*\nP.S. bye",  # last line removed (end_checker '*end*')
    "A ****** B\nX\n******\nY\nC ****** D",  # both removed (two_responses)
    "Write *about* the sea. Then this is the *end*",

    "*highlighted* and **bold** and * * and ** ** and *multi\nline*",
    "*one* *two* *three*",
    "**one** **two**",
    "Section 1\nIntro.\nSECTION 2\nMore.\nSection3 text. Section 4",
    "SECTION 1 a SECTION 2 b",
    "Some text.\nP.S. Remember this.",
    "Some text.\np. s. lower case.",
    "Text.\nP.P.S more.",
    "Text.\nP.p.s. mixed",
    "Text.\nNote: the end.",
    "Fill in [name] at [address], call [phone] [ ] []",
    "[only one]",
    '{"a": 1, "b": [1, 2]}',
    '```json\n{"a": 1}\n```',
    '```JSON\n{"a": 1}\n```',
    "```\n[1, 2, 3]\n```",
    'Here is JSON:\n{"a": 1}',
    '{"a": 1}\nThat was JSON.',
    "{'a': 1}",
    "*{\"a\": 1}*",
    "<<My Title>>\nBody.",
    "<< >>\nBody.",
    "<<>> nothing",
    "<<Title\nbroken>>",
    "Answer one.\n******\nAnswer two.",
    "Same.\n******\nSame.",
    "******\nA\n******\nB\n******",
    "A\n******\n\n******\nB",
    PROMPT + " And here is my answer.",
    "  write ABOUT the sea. Repeat this request first. yes",
    "Sure!\n" + PROMPT,
    "The end. Any other questions?",
    'The end. "Any other questions?"',
    "The end. any other questions?  ",
    "Any other questions?\nExtra line",
    '"Fully quoted response."',
    '"',
    '""',
    ' "Quoted with spaces" ',
    "No commas here at all.",
    "My answer is yes.",
    "Well... My answer is maybe. I think.",
    "my answer is no.",
    "THIS IS ALL CAPITAL ENGLISH TEXT ABOUT THE WEATHER TODAY.",
    "THIS IS ALL CAPITAL BUT ENDS WITH lower",
    "this is all lowercase english text about the weather today.",
    "ceci est un texte entièrement en français sur la météo.",
    "Esto es un texto en español sobre el tiempo de hoy, que es soleado.",
    "Dies ist ein deutscher Text über das Wetter heute.",
    "これは日本語の文章です。今日は晴れです。",
    "12345 !!! ???",
    "Ⅻ Ⅻ",
    "The U.S.A. and the U.K. are BIG. NASA, FBI, CIA, I, OK and USA.",
    "WORD " * 5,
    "WORD " * 6,
    "The letter e appears here: eeeeeeeee.",
    "The sea, the sea, the SEA. Seahorses live in the sea.",
    "Banana a.b axb and keyword KEYWORD keywords.",
    "I love cats. Cat lovers unite; concatenate.",
    "*Intro*\n" + _words(10) + "\n*Outro*",
    "Banana by the sea.",
    "Starts here.\n\nThen more.",
    "[a] [b] [c] [d] [e] [f]",
    "*a* *b* *c* *d*",
    "Section 1 a Section 2 b Section 3 c Section 4 d",
    "Title line\n" + _sentences(3) + "\nclosing",
]

CONFIGS = [
    ("keywords:existence", {"keywords": ["sea", "banana"]}),
    ("keywords:existence", {"keywords": ["a.b"]}),
    ("keywords:existence", {"keywords": ["cat"]}),
    ("keywords:frequency", {"keyword": "sea", "frequency": 3, "relation": "at least"}),
    ("keywords:frequency", {"keyword": " sea ", "frequency": 4, "relation": "less than"}),
    ("keywords:frequency", {"keyword": "keyword", "frequency": 2, "relation": "at least"}),
    ("keywords:forbidden_words", {"forbidden_words": ["cat", "sea"]}),
    ("keywords:forbidden_words", {"forbidden_words": ["word", "word"]}),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 9, "let_relation": "at least"}),
    ("keywords:letter_frequency", {"letter": "E", "let_frequency": 10, "let_relation": "less than"}),
    ("keywords:letter_frequency", {"letter": "w", "let_frequency": 3, "let_relation": "at least"}),
    ("language:response_language", {"language": "en"}),
    ("language:response_language", {"language": "fr"}),
    ("language:response_language", {"language": "es"}),
    ("language:response_language", {"language": "ja"}),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}),
    ("length_constraints:number_sentences", {"num_sentences": 1, "relation": "at least"}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 1}),
    ("length_constraints:number_words", {"num_words": 10, "relation": "at least"}),
    ("length_constraints:number_words", {"num_words": 10, "relation": "less than"}),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 1, "first_word": "Hello"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 3, "first_word": "hello"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "starts"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "second"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "quoted"}),
    ("detectable_content:number_placeholders", {"num_placeholders": 1}),
    ("detectable_content:number_placeholders", {"num_placeholders": 5}),
    ("detectable_content:number_placeholders", {"num_placeholders": 6}),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}),
    ("detectable_content:postscript", {"postscript_marker": " Note: "}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 4}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}),
    ("detectable_format:constrained_response", {}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 3}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 4}),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}),
    ("detectable_format:multiple_sections", {"section_spliter": " SECTION ", "num_sections": 2}),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 4}),
    ("detectable_format:json_format", {}),
    ("detectable_format:title", {}),
    ("combination:two_responses", {}),
    ("combination:repeat_prompt", {"prompt_to_repeat": PROMPT}),
    ("combination:repeat_prompt", {"prompt_to_repeat": " Write about the sea. "}),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write *about* the sea."}),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}),
    ("startend:end_checker", {"end_phrase": " questions? "}),
    ("startend:end_checker", {"end_phrase": "*end*"}),
    ("change_case:capital_word_frequency", {"capital_frequency": 5, "capital_relation": "at least"}),
    ("change_case:capital_word_frequency", {"capital_frequency": 6, "capital_relation": "less than"}),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}),
    ("change_case:english_capital", {}),
    ("change_case:english_lowercase", {}),
    ("punctuation:no_comma", {}),
    ("startend:quotation", {}),
]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    with lm_eval_ifeval(tmp_path_factory.mktemp("nltk_data")) as utils:
        yield utils


def test_every_registered_instruction_is_covered(oracle):
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(INSTRUCTIONS) == set(INSTRUCTION_DICT)
    assert {iid for iid, _ in CONFIGS} == set(INSTRUCTIONS)


@pytest.mark.parametrize("iid,kwargs", CONFIGS, ids=[f"{i}-{n}" for n, (i, _) in enumerate(CONFIGS)])
def test_strict_and_loose_verdicts_equal_the_reference(oracle, iid, kwargs):
    row = IfEvalRow(1, PROMPT, [iid], [kwargs])
    inp = oracle.InputExample(key=1, instruction_id_list=[iid], prompt=PROMPT, kwargs=[kwargs])
    checks = row_checks(row)
    diffs, seen = [], set()
    for response in RESPONSES:
        ours = (follow_strict(checks, response), follow_loose(checks, response))
        ref = (oracle.test_instruction_following_strict(inp, response).follow_instruction_list,
               oracle.test_instruction_following_loose(inp, response).follow_instruction_list)
        if ours != ref:
            diffs.append((response, ours, ref))
        seen.update((mode, v[0]) for mode, v in zip(("strict", "loose"), ours, strict=True))
    assert not diffs, diffs
    assert {("strict", True), ("strict", False), ("loose", True)} <= seen  # the responses discriminate


def test_metrics_equal_lm_evals_aggregation(oracle):
    """Multi-instruction rows: prompt- and instruction-level strict/loose as lm-eval's process_results +
    mean / agg_inst_level_acc compute them."""
    rows, docs, responses = [], [], []
    for n, (pair, response) in enumerate(zip(itertools.combinations(CONFIGS[::3], 2), itertools.cycle(RESPONSES[::2]))):
        (i1, k1), (i2, k2) = pair
        if i1 == i2:
            continue
        rows.append(IfEvalRow(n, PROMPT, [i1, i2], [k1, k2]))
        docs.append({"key": n, "prompt": PROMPT, "instruction_id_list": [i1, i2], "kwargs": [k1, k2]})
        responses.append(response)
    assert len(rows) > 100
    ours = summarise([score_row(r, resp) for r, resp in zip(rows, responses, strict=True)])
    per_doc = [oracle.process_results(d, [resp]) for d, resp in zip(docs, responses, strict=True)]
    for metric in ("prompt_level_strict_acc", "prompt_level_loose_acc"):
        assert ours[metric] == pytest.approx(sum(p[metric] for p in per_doc) / len(per_doc), abs=1e-12)
    for metric in ("inst_level_strict_acc", "inst_level_loose_acc"):
        assert ours[metric] == pytest.approx(oracle.agg_inst_level_acc([p[metric] for p in per_doc]), abs=1e-12)
    assert 0 < ours["prompt_level_strict_acc"] < ours["inst_level_loose_acc"] < 1


def test_verdicts_equal_the_reference_on_seeded_random_compositions(oracle):
    """120 responses glued from the boundary responses with separators the checkers care about (newlines,
    paragraph and response dividers, quotes, asterisks): every configuration, strict and loose."""
    import random

    rng = random.Random(17)
    seps = ["\n", "\n\n", " ", "\n***\n", "\n******\n", "*", '"', "\n\n\n"]
    responses = [rng.choice(seps).join(rng.sample(RESPONSES, rng.randint(2, 4))) for _ in range(120)]
    language = {"language:response_language", "change_case:english_capital", "change_case:english_lowercase"}
    diffs = []
    for iid, kwargs in CONFIGS:
        inp = oracle.InputExample(key=1, instruction_id_list=[iid], prompt=PROMPT, kwargs=[kwargs])
        checks = row_checks(IfEvalRow(1, PROMPT, [iid], [kwargs]))
        for response in responses[:25] if iid in language else responses:  # langdetect is the slow part
            ours = (follow_strict(checks, response), follow_loose(checks, response))
            ref = (oracle.test_instruction_following_strict(inp, response).follow_instruction_list,
                   oracle.test_instruction_following_loose(inp, response).follow_instruction_list)
            if ours != ref:
                diffs.append((iid, kwargs, response, ours, ref))
    assert not diffs, diffs[:5]
