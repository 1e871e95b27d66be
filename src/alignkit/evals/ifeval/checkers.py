"""The 25 active IFEval instruction checkers (google-research ``instruction_following_eval``, as vendored
in lm-eval ``tasks/ifeval``), with the reference's semantics.

Each instruction id maps to an :class:`Instruction`: the keyword arguments it takes (and their types)
and a builder that turns validated arguments into a check ``str -> bool``. Where the reference, given
no usable value, would draw one at random (a missing ``num_words``, an ``nth_paragraph`` beyond
``num_paragraphs``, a letter outside a-z, ...), this module refuses with :class:`InstructionError`
instead: a score must not depend on a random draw (and a keyword that is not a valid regular expression,
on which the reference would crash mid-run, is refused when the row is read). Everything else, including
the reference's quirks, is kept: keywords and section splitters are regular expressions, not literal strings; a response
``langdetect`` cannot classify counts as in the requested language; ``nth_paragraph_first_word``
indexes the raw ``\\n\\n`` split but counts only non-empty paragraphs.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignkit.evals.ifeval import text

CHECKER_VERSION = "ifeval-checkers/1 (google-research instruction_following_eval; lm-eval tasks/ifeval 4.0)"

Check = Callable[[str], bool]

RELATIONS = ("less than", "at least")
LANGUAGES = {
    "en": "English", "es": "Spanish", "pt": "Portuguese", "ar": "Arabic", "hi": "Hindi", "fr": "French",
    "ru": "Russian", "de": "German", "ja": "Japanese", "it": "Italian", "bn": "Bengali", "uk": "Ukrainian",
    "th": "Thai", "ur": "Urdu", "ta": "Tamil", "te": "Telugu", "bg": "Bulgarian", "ko": "Korean",
    "pl": "Polish", "he": "Hebrew", "fa": "Persian", "vi": "Vietnamese", "ne": "Nepali", "sw": "Swahili",
    "kn": "Kannada", "mr": "Marathi", "gu": "Gujarati", "pa": "Punjabi", "ml": "Malayalam", "fi": "Finnish",
}
"""The languages ``language:response_language`` accepts (the reference's ``LANGUAGE_CODES``)."""
_ASCII_LOWER = frozenset(string.ascii_lowercase)
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


class InstructionError(ValueError):
    """An instruction id or argument the reference cannot score deterministically."""


@dataclass(frozen=True)
class Instruction:
    """One instruction type: its argument names and types, and the builder of its check."""

    args: dict[str, type]
    build: Callable[..., Check]


# ------------------------------------------------------------------------------ argument checks
def _at_least(name: str, value: int, low: int) -> int:
    if value < low:
        raise InstructionError(f"{name} must be >= {low} (got {value})")
    return value


def _relation(name: str, value: str) -> str:
    if value not in RELATIONS:
        raise InstructionError(f"{name} must be one of {list(RELATIONS)} (got {value!r})")
    return value


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


def _regex(name: str, pattern: str, flags: int = 0) -> re.Pattern:
    """The reference uses keywords, markers and splitters as regular expressions: one that does not
    compile is refused when the row is read, not when the first response is scored."""
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise InstructionError(f"{name} {pattern!r} is not a valid regular expression ({exc})") from None


def _nonempty(name: str, value: Any) -> Any:
    if not value:
        raise InstructionError(f"{name} must not be empty")
    return value


# ------------------------------------------------------------------------------ keywords
def _existence(keywords: list[str]) -> Check:
    patterns = [_regex("keyword", k, re.IGNORECASE) for k in sorted(_nonempty("keywords", keywords))]
    return lambda r: all(p.search(r) for p in patterns)


def _frequency(keyword: str, frequency: int, relation: str) -> Check:
    pattern = _regex("keyword", _nonempty("keyword", keyword).strip(), re.IGNORECASE)
    n, rel = _at_least("frequency", frequency, 0), _relation("relation", relation)
    return lambda r: _compare(len(pattern.findall(r)), rel, n)


def _forbidden(forbidden_words: list[str]) -> Check:
    words = sorted(set(_nonempty("forbidden_words", forbidden_words)))
    patterns = [_regex("forbidden word", r"\b" + w + r"\b", re.IGNORECASE) for w in words]
    return lambda r: not any(p.search(r) for p in patterns)


def _letter_frequency(letter: str, let_frequency: int, let_relation: str) -> Check:
    if len(letter) != 1 or letter.lower() not in _ASCII_LOWER:
        raise InstructionError(f"letter must be one ASCII letter (got {letter!r})")
    ch = letter.strip().lower()
    n, rel = _at_least("let_frequency", let_frequency, 0), _relation("let_relation", let_relation)
    return lambda r: _compare(Counter(r.lower())[ch], rel, n)


# ------------------------------------------------------------------------------ language and case
def _language_is(code: str, r: str) -> bool:
    try:
        return text.detect_language(r) == code
    except text.LanguageUndetectable:
        return True  # the reference: an undetectable language counts as followed


def _response_language(language: str) -> Check:
    if language not in LANGUAGES:
        raise InstructionError(f"language must be one of {sorted(LANGUAGES)} (got {language!r})")
    return lambda r: _language_is(language, r)


def _english_capital() -> Check:
    return lambda r: r.isupper() and _language_is("en", r)


def _english_lowercase() -> Check:
    return lambda r: r.islower() and _language_is("en", r)


def _capital_word_frequency(capital_frequency: int, capital_relation: str) -> Check:
    rel = _relation("capital_relation", capital_relation)
    return lambda r: _compare(sum(w.isupper() for w in text.word_tokenize(r)), rel, capital_frequency)


# ------------------------------------------------------------------------------ length
def _number_sentences(num_sentences: int, relation: str) -> Check:
    n, rel = _at_least("num_sentences", num_sentences, 0), _relation("relation", relation)
    return lambda r: _compare(text.count_sentences(r), rel, n)


def _number_words(num_words: int, relation: str) -> Check:
    n, rel = _at_least("num_words", num_words, 0), _relation("relation", relation)
    return lambda r: _compare(text.count_words(r), rel, n)


def _count_paragraphs(r: str) -> int | None:
    """Paragraphs separated by ``***``; None when an inner one is empty (the reference fails those)."""
    parts = re.split(r"\s?\*\*\*\s?", r)
    n = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                n -= 1
            else:
                return None
    return n


def _number_paragraphs(num_paragraphs: int) -> Check:
    n = _at_least("num_paragraphs", num_paragraphs, 0)
    return lambda r: _count_paragraphs(r) == n


def _first_word(paragraph: str) -> str:
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    out = ""
    for ch in word:
        if ch in ".,?!'\"":
            break
        out += ch.lower()
    return out


def _nth_paragraph_first_word(num_paragraphs: int, nth_paragraph: int, first_word: str) -> Check:
    total = _at_least("num_paragraphs", num_paragraphs, 0)
    nth = _at_least("nth_paragraph", nth_paragraph, 1)
    if nth > total:
        raise InstructionError(f"nth_paragraph ({nth}) must be <= num_paragraphs ({total})")
    word = first_word.lower()

    def check(r: str) -> bool:
        paragraphs = re.split(r"\n\n", r)
        count = sum(1 for p in paragraphs if p.strip())
        if nth > count:
            return False
        paragraph = paragraphs[nth - 1].strip()  # the raw split, empty paragraphs included
        return bool(paragraph) and count == total and _first_word(paragraph) == word

    return check


# ------------------------------------------------------------------------------ content and format
def _placeholders(num_placeholders: int) -> Check:
    n = _at_least("num_placeholders", num_placeholders, 0)
    return lambda r: len(re.findall(r"\[.*?\]", r)) >= n


def _postscript(postscript_marker: str) -> Check:
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + marker.lower() + r".*$"
    compiled = _regex("postscript_marker", pattern, re.MULTILINE)
    return lambda r: bool(compiled.findall(r.lower()))


def _bullet_lists(num_bullets: int) -> Check:
    n = _at_least("num_bullets", num_bullets, 0)
    return lambda r: (len(re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE))
                      + len(re.findall(r"^\s*-.*$", r, flags=re.MULTILINE))) == n


def _constrained_response() -> Check:
    return lambda r: any(option in r.strip() for option in CONSTRAINED_RESPONSES)


def _count_highlights(r: str) -> int:
    single = sum(1 for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip())
    double = sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h.removeprefix("**").removesuffix("**").strip())
    return single + double


def _highlighted_sections(num_highlights: int) -> Check:
    n = _at_least("num_highlights", num_highlights, 0)
    return lambda r: _count_highlights(r) >= n


def _multiple_sections(section_spliter: str, num_sections: int) -> Check:
    pattern = _regex("section_spliter", r"\s?" + section_spliter.strip() + r"\s?\d+\s?")
    n = _at_least("num_sections", num_sections, 0)
    return lambda r: len(pattern.split(r)) - 1 >= n


def _is_json(r: str) -> bool:
    body = (r.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON")
            .removeprefix("```").removesuffix("```").strip())
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _json_format() -> Check:
    return _is_json


def _title() -> Check:
    return lambda r: any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _two_responses_ok(r: str) -> bool:
    parts = r.split("******")
    kept = []
    for i, part in enumerate(parts):
        if part.strip():
            kept.append(part)
        elif i not in (0, len(parts) - 1):
            return False
    return len(kept) == 2 and kept[0].strip() != kept[1].strip()


def _two_responses() -> Check:
    return _two_responses_ok


def _repeat_prompt(prompt_to_repeat: str) -> Check:
    start = _nonempty("prompt_to_repeat", prompt_to_repeat).strip().lower()
    return lambda r: r.strip().lower().startswith(start)


def _end_checker(end_phrase: str) -> Check:
    end = end_phrase.strip().lower()
    return lambda r: r.strip().strip('"').lower().endswith(end)


def _no_comma() -> Check:
    return lambda r: "," not in r


def _quotation() -> Check:
    def check(r: str) -> bool:
        s = r.strip()
        return len(s) > 1 and s[0] == '"' and s[-1] == '"'

    return check


INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction({"keywords": list}, _existence),
    "keywords:frequency": Instruction({"keyword": str, "frequency": int, "relation": str}, _frequency),
    "keywords:forbidden_words": Instruction({"forbidden_words": list}, _forbidden),
    "keywords:letter_frequency": Instruction({"letter": str, "let_frequency": int, "let_relation": str},
                                             _letter_frequency),
    "language:response_language": Instruction({"language": str}, _response_language),
    "length_constraints:number_sentences": Instruction({"num_sentences": int, "relation": str},
                                                       _number_sentences),
    "length_constraints:number_paragraphs": Instruction({"num_paragraphs": int}, _number_paragraphs),
    "length_constraints:number_words": Instruction({"num_words": int, "relation": str}, _number_words),
    "length_constraints:nth_paragraph_first_word": Instruction(
        {"num_paragraphs": int, "nth_paragraph": int, "first_word": str}, _nth_paragraph_first_word),
    "detectable_content:number_placeholders": Instruction({"num_placeholders": int}, _placeholders),
    "detectable_content:postscript": Instruction({"postscript_marker": str}, _postscript),
    "detectable_format:number_bullet_lists": Instruction({"num_bullets": int}, _bullet_lists),
    "detectable_format:constrained_response": Instruction({}, _constrained_response),
    "detectable_format:number_highlighted_sections": Instruction({"num_highlights": int}, _highlighted_sections),
    "detectable_format:multiple_sections": Instruction({"section_spliter": str, "num_sections": int},
                                                       _multiple_sections),
    "detectable_format:json_format": Instruction({}, _json_format),
    "detectable_format:title": Instruction({}, _title),
    "combination:two_responses": Instruction({}, _two_responses),
    "combination:repeat_prompt": Instruction({"prompt_to_repeat": str}, _repeat_prompt),
    "startend:end_checker": Instruction({"end_phrase": str}, _end_checker),
    "change_case:capital_word_frequency": Instruction({"capital_frequency": int, "capital_relation": str},
                                                      _capital_word_frequency),
    "change_case:english_capital": Instruction({}, _english_capital),
    "change_case:english_lowercase": Instruction({}, _english_lowercase),
    "punctuation:no_comma": Instruction({}, _no_comma),
    "startend:quotation": Instruction({}, _quotation),
}
"""The 25 instruction ids the reference registers (its disabled ones are not scored)."""


def group_of(instruction_id: str) -> str:
    """The id's group, e.g. ``detectable_format`` for ``detectable_format:title``."""
    return instruction_id.split(":", 1)[0]


def _typed(name: str, value: Any, typ: type) -> Any:
    ok = isinstance(value, typ) and not isinstance(value, bool)
    if ok and typ is list:
        ok = all(isinstance(x, str) for x in value)
    if not ok:
        want = {int: "an integer", str: "a string", list: "a list of strings"}[typ]
        raise InstructionError(f"argument {name!r}: expected {want}, got {value!r}")
    return value


def build_check(instruction_id: str, kwargs: dict[str, Any]) -> Check:
    """The check of one instruction with the row's arguments (``None`` values dropped, as the reference
    does); :class:`InstructionError` for an unknown id, a missing, unexpected or ill-typed argument."""
    spec = INSTRUCTIONS.get(instruction_id)
    if spec is None:
        raise InstructionError(f"unknown instruction id {instruction_id!r}; known: {sorted(INSTRUCTIONS)}")
    given = {k: v for k, v in kwargs.items() if v is not None}
    extra = sorted(set(given) - set(spec.args))
    if extra:
        raise InstructionError(f"{instruction_id}: unexpected argument(s) {extra}; it takes {sorted(spec.args)}")
    missing = sorted(set(spec.args) - set(given))
    if missing:
        raise InstructionError(f"{instruction_id}: missing argument(s) {missing} (the reference would draw "
                               "them at random)")
    try:
        return spec.build(**{k: _typed(k, given[k], typ) for k, typ in spec.args.items()})
    except InstructionError as exc:
        raise InstructionError(f"{instruction_id}: {exc}") from None
