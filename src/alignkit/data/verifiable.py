"""Verifiable-instruction prompts (IFEval-style) and their verifiers.

The demo needs preference data whose quality does not depend on a judge model: every prompt
carries a machine-checkable constraint, and ``verify(response, constraint)`` decides pass/fail.
Inspired by IFEval (Zhou et al., 2023, arXiv:2311.07911); the constraint set, wording and
tokenisation rules are ours and are documented below so a pass/fail is never a mystery.

Row format (JSON-serialisable)::

    {"id": "vif-37fe8165d4b0",
     "prompt": "Why is sleep important? Answer in at most 31 words.",
     "constraint": {"type": "max_words", "n": 31, "instruction": "Answer in at most 31 words."}}

Constraint types and their parameters:

=================  ===========================  =================================================
type               params                       passes when
=================  ===========================  =================================================
``exact_words``    ``n``                        the response has exactly ``n`` words
``max_words``      ``n``                        it has between 1 and ``n`` words
``lowercase``      --                           it has a cased letter and no upper/title-case one
``start_with``     ``word``                     its first word is ``word`` (case-insensitive)
``end_with``       ``word``                     its last word is ``word`` (case-insensitive)
``no_commas``      --                           it contains no ``,`` (nor fullwidth ``，``)
``keyword_count``  ``keyword``, ``min_count``   ``keyword`` occurs as a whole word >= min_count times
``quoted``         --                           stripped, it starts and ends with a double quote
``arithmetic``     ``expression``, ``answer``   stripped, it is exactly the integer ``answer``
=================  ===========================  =================================================

Tokenisation (what counts as a word), shared by every word-based check:

* a word is a maximal run of Unicode letters/digits (``[^\\W_]+``);
* an apostrophe (``'`` or ``’``) or hyphen between two letters/digits joins them into one word
  (``don't``, ``well-known``), and so does ``.`` or ``,`` between two digits (``3.5``, ``1,000``);
* everything else -- spaces, punctuation, quotes, markdown symbols (``**``, ``#``), emoji --
  separates words and is never counted. So ``"Peace!"`` ends with the word ``peace``, and
  ``**Sure**, here it is`` starts with ``sure``.

Parroting: generated constraints also carry ``instruction``, the instruction sentence as it appears
in the prompt. When present, a response that repeats ``ECHO_SPAN`` (3) consecutive words of it
fails whatever its type -- "The last word of your answer must be today." restates the instruction
instead of answering. Constraints without ``instruction`` skip this check.

Common rules: an empty or whitespace-only response fails every constraint (otherwise "use no
commas" would reward saying nothing). Checks are strict (no IFEval "loose" variants that strip
the first/last line); trailing whitespace never matters. ``keyword_count`` compares whole words
case-insensitively after removing a possessive ``'s`` (``ocean's`` counts as ``ocean``; ``oceans``
does not). ``quoted`` accepts straight (``"``) or curly (``“ ”``) quotes and needs at least one
word inside. ``arithmetic`` accepts an optional leading minus and one trailing period (``42.``) and
nothing else -- the prompt asks for just the number.

Splits are by a hash of the row id, so a prompt's split never depends on how many rows were
generated, and no prompt text is in both splits.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from alignkit.data.records import iter_records, require
from alignkit.errors import DataError

# Shipped files made by ``python -m alignkit.pipelines.verifiable_prefs`` (docs/demo_data.md).
DEMO_DIR = Path(__file__).parent / "demo"
DEMO_PREFS = DEMO_DIR / "verifiable_prefs.jsonl"
DEMO_KWAY = DEMO_DIR / "verifiable_kway.jsonl"
DEMO_SFT = DEMO_DIR / "verifiable_sft.jsonl"
DEMO_HELDOUT = DEMO_DIR / "verifiable_heldout.jsonl"
DEMO_SUMMARY = DEMO_DIR / "verifiable_summary.json"

CONSTRAINT_TYPES = (
    "exact_words",
    "max_words",
    "lowercase",
    "start_with",
    "end_with",
    "no_commas",
    "keyword_count",
    "quoted",
    "arithmetic",
)

# Relative frequency of each type in generated sets. Chosen after measuring the embedded
# SmolLM2-135M-Instruct (see docs/demo_data.md): types it almost never passes are kept rarer so
# the overall greedy pass rate sits inside the 20-60 % band where improvement is measurable.
DEFAULT_MIX: dict[str, float] = {
    "exact_words": 0.5,
    "max_words": 1.5,
    "lowercase": 0.5,
    "start_with": 1.0,
    "end_with": 1.0,
    "no_commas": 1.0,
    "keyword_count": 1.5,
    "quoted": 0.5,
    "arithmetic": 0.5,
}

_REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {
    "exact_words": ("n",),
    "max_words": ("n",),
    "lowercase": (),
    "start_with": ("word",),
    "end_with": ("word",),
    "no_commas": (),
    "keyword_count": ("keyword", "min_count"),
    "quoted": (),
    "arithmetic": ("expression", "answer"),
}

# (question, topic keyword). Everyday questions a 135M chat model can answer in a sentence or two;
# the keyword is a word the answer would naturally use, for ``keyword_count``.
TOPICS: tuple[tuple[str, str], ...] = (
    ("Describe the ocean.", "water"),
    ("What is your favourite season and why?", "season"),
    ("Explain what a rainbow is.", "light"),
    ("Why do people keep dogs as pets?", "dogs"),
    ("What makes a good breakfast?", "breakfast"),
    ("Describe a busy city street.", "street"),
    ("Why is sleep important?", "sleep"),
    ("What do bees do?", "bees"),
    ("Describe your ideal weekend.", "weekend"),
    ("How does a bicycle work?", "wheels"),
    ("Why do leaves change colour in autumn?", "leaves"),
    ("What is the moon?", "moon"),
    ("Give advice to a new student.", "study"),
    ("Describe a thunderstorm.", "rain"),
    ("Why should people drink water?", "water"),
    ("What is a library for?", "books"),
    ("Describe the taste of a lemon.", "sour"),
    ("How do plants grow?", "sunlight"),
    ("What is friendship?", "friends"),
    ("Describe a mountain at sunrise.", "mountain"),
    ("Why do birds sing?", "birds"),
    ("What is a computer?", "computer"),
    ("Describe a cup of coffee.", "coffee"),
    ("How can someone stay healthy?", "exercise"),
    ("What is music?", "music"),
    ("Describe a quiet forest.", "trees"),
    ("Why do we need money?", "money"),
    ("What happens in winter?", "snow"),
    ("Describe the smell of fresh bread.", "bread"),
    ("How do trains work?", "train"),
    ("What is the sun?", "sun"),
    ("Why is reading useful?", "reading"),
    ("Describe a day at the beach.", "sand"),
    ("What do cats like to do?", "cats"),
    ("How do you make tea?", "tea"),
    ("What is a garden?", "plants"),
    ("Describe a snowy morning.", "snow"),
    ("Why do people travel?", "travel"),
    ("What is a river?", "river"),
    ("Describe your favourite food.", "food"),
)

_START_WORDS = ("Yes", "Sure", "Well", "Certainly", "Honestly", "Today", "Imagine", "First")
_END_WORDS = ("today", "friend", "forever", "indeed", "everywhere", "now", "peace", "always")

# Several phrasings per type so the model cannot key on one fixed string.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "exact_words": (
        "{q} Answer in exactly {n} words.",
        "{q} Your answer must be exactly {n} words long.",
        "Using exactly {n} words, answer this: {q}",
    ),
    "max_words": (
        "{q} Answer in at most {n} words.",
        "{q} Keep your answer to {n} words or fewer.",
        "In no more than {n} words: {q}",
    ),
    "lowercase": (
        "{q} Write your whole answer in lowercase letters only.",
        "{q} Do not use any capital letters in your answer.",
        "Answer in all lowercase, with no capital letters at all. {q}",
    ),
    "start_with": (
        "{q} Start your answer with the word \"{word}\".",
        "{q} The first word of your answer must be \"{word}\".",
        "Begin your reply with the word \"{word}\". {q}",
    ),
    "end_with": (
        "{q} End your answer with the word \"{word}\".",
        "{q} The last word of your answer must be \"{word}\".",
        "Finish your reply with the word \"{word}\". {q}",
    ),
    "no_commas": (
        "{q} Do not use any commas in your answer.",
        "{q} Your answer must not contain a single comma.",
        "Without using any commas, answer this: {q}",
    ),
    "keyword_count": (
        "{q} Use the word \"{keyword}\" {times} in your answer.",
        "{q} Your answer must include the word \"{keyword}\" {times}.",
        "Mention the word \"{keyword}\" {times}. {q}",
    ),
    "quoted": (
        "{q} Wrap your entire answer in double quotation marks.",
        "{q} Put your whole answer inside double quotes.",
        "Answer inside double quotation marks, like \"this\". {q}",
    ),
    "arithmetic": (
        "What is {e}? Answer with just the number.",
        "Compute {e}. Reply with only the number.",
        "Calculate {e} and give only the final number.",
    ),
}

# A 135M model often "answers" by restating the instruction ("The last word of your answer must be
# peace."), which satisfies end_with/no_commas/exact_words by accident. Three shared consecutive
# words catch those restatements while honest answers almost never say "the last word of".
ECHO_SPAN = 3

_TIMES = {1: "at least once", 2: "at least twice", 3: "at least 3 times"}

_WORD_RE = re.compile(r"[^\W_]+(?:(?:['’\-]|(?<=\d)[.,](?=\d))[^\W_]+)*")
_POSSESSIVE_RE = re.compile(r"['’]s$")
_NUMBER_RE = re.compile(r"-?\d+\.?")
_OPEN_QUOTES = ('"', "“")
_CLOSE_QUOTES = ('"', "”")


def words(text: str) -> list[str]:
    """Split ``text`` into words by the module's documented rule (punctuation is not a word)."""
    return _WORD_RE.findall(text)


def echoes(response_words: list[str], instruction: str, span: int = ECHO_SPAN) -> bool:
    """True when ``span`` consecutive response words (case-insensitive) also appear in a row in
    ``instruction`` -- the response restates the instruction instead of following it."""
    inst = [w.casefold() for w in words(instruction)]
    grams = {tuple(inst[i : i + span]) for i in range(len(inst) - span + 1)}
    resp = [w.casefold() for w in response_words]
    return any(tuple(resp[i : i + span]) in grams for i in range(len(resp) - span + 1))


def _check_params(constraint: Mapping[str, Any]) -> str:
    if not isinstance(constraint, Mapping):
        raise ValueError(f"expected an object with a 'type', got {type(constraint).__name__}")
    ctype = constraint.get("type")
    if ctype not in _REQUIRED_PARAMS:
        raise ValueError(f"unknown constraint type {ctype!r}; expected one of {', '.join(CONSTRAINT_TYPES)}")
    for key in _REQUIRED_PARAMS[ctype]:
        if key not in constraint:
            raise ValueError(f"constraint type {ctype!r} needs field {key!r}")
    return ctype


def verify(response: str, constraint: Mapping[str, Any]) -> bool:
    """True when ``response`` satisfies ``constraint`` (rules in the module docstring).

    Raises ``ValueError`` for an unknown type or missing parameter, so a malformed data file is
    an error rather than a silent 0 % pass rate.
    """
    ctype = _check_params(constraint)
    text = response.strip()
    if not text:
        return False
    ws = words(text)
    instruction = constraint.get("instruction")
    if instruction and echoes(ws, str(instruction)):
        return False
    if ctype == "exact_words":
        return len(ws) == int(constraint["n"])
    if ctype == "max_words":
        return 1 <= len(ws) <= int(constraint["n"])
    if ctype == "lowercase":
        return any(c.isalpha() for c in text) and text == text.lower()
    if ctype == "start_with":
        return bool(ws) and ws[0].casefold() == str(constraint["word"]).casefold()
    if ctype == "end_with":
        return bool(ws) and ws[-1].casefold() == str(constraint["word"]).casefold()
    if ctype == "no_commas":
        return "," not in text and "，" not in text
    if ctype == "keyword_count":
        key = str(constraint["keyword"]).casefold()
        hits = sum(_POSSESSIVE_RE.sub("", w).casefold() == key for w in ws)
        return hits >= int(constraint["min_count"])
    if ctype == "quoted":
        return (
            len(text) >= 2
            and text.startswith(_OPEN_QUOTES)
            and text.endswith(_CLOSE_QUOTES)
            and bool(words(text[1:-1]))
        )
    # arithmetic
    if not _NUMBER_RE.fullmatch(text):
        return False
    return int(text.rstrip(".")) == int(constraint["answer"])


def _arithmetic(rng: random.Random) -> tuple[str, int]:
    op = rng.choice("+-*")
    if op == "+":
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        return f"{a} + {b}", a + b
    if op == "-":
        a = rng.randint(10, 99)
        b = rng.randint(1, a - 1)
        return f"{a} - {b}", a - b
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"{a} × {b}", a * b


def _one(rng: random.Random, ctype: str) -> tuple[str, dict[str, Any]]:
    template = rng.choice(_TEMPLATES[ctype])
    q, keyword = rng.choice(TOPICS)
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if ctype == "exact_words":
        params["n"] = fields["n"] = rng.randint(3, 8)
    elif ctype == "max_words":
        params["n"] = fields["n"] = rng.randint(12, 40)
    elif ctype in ("start_with", "end_with"):
        params["word"] = fields["word"] = rng.choice(_START_WORDS if ctype == "start_with" else _END_WORDS)
    elif ctype == "keyword_count":
        k = rng.randint(1, 3)
        params.update(keyword=keyword, min_count=k)
        fields.update(keyword=keyword, times=_TIMES[k])
    elif ctype == "arithmetic":
        expression, answer = _arithmetic(rng)
        params.update(expression=expression, answer=answer)
        fields["e"] = expression
    # The instruction is the template without the question: what a parroting answer would copy.
    instruction = template.replace("{q}", "").strip(" :").format(**fields)
    return template.format(q=q, **fields), {"type": ctype, **params, "instruction": instruction}


def row_id(prompt: str, constraint: Mapping[str, Any]) -> str:
    """Content id: the same prompt and constraint always get the same id, whatever the seed."""
    blob = json.dumps({"prompt": prompt, "constraint": dict(constraint)}, sort_keys=True, ensure_ascii=False)
    return "vif-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def iter_prompts(seed: int = 0, mix: Mapping[str, float] | None = None) -> Iterator[dict[str, Any]]:
    """Endless stream of distinct rows, deterministic in ``seed`` and ``mix``.

    Duplicate prompt texts are skipped, so every yielded ``prompt`` is unique within the stream.
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = sorted(set(mix) - set(CONSTRAINT_TYPES))
    if unknown:
        raise ValueError(f"mix: unknown constraint type(s) {unknown}; expected {', '.join(CONSTRAINT_TYPES)}")
    types = [t for t in CONSTRAINT_TYPES if mix.get(t, 0) > 0]
    if not types:
        raise ValueError("mix: at least one constraint type needs a positive weight")
    weights = [float(mix[t]) for t in types]
    rng = random.Random(seed)
    seen: set[str] = set()
    misses = 0
    while True:
        ctype = rng.choices(types, weights)[0]
        prompt, constraint = _one(rng, ctype)
        if prompt in seen:
            misses += 1
            # The prompt space holds tens of thousands of texts; this only trips on a tiny mix.
            if misses > 10_000:
                raise ValueError(f"mix {mix}: cannot produce more than {len(seen)} distinct prompts")
            continue
        misses = 0
        seen.add(prompt)
        yield {"id": row_id(prompt, constraint), "prompt": prompt, "constraint": constraint}


def is_heldout(rid: str, heldout_fraction: float) -> bool:
    """Deterministic split: a row is held out when the hash of its id falls below the fraction."""
    h = int(hashlib.sha256(f"split:{rid}".encode()).hexdigest()[:8], 16)
    return h < heldout_fraction * 0x1_0000_0000


def generate_prompts(n: int, seed: int = 0, mix: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """The first ``n`` rows of ``iter_prompts(seed, mix)`` (no split)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_prompts(seed, mix)
    return [next(stream) for _ in range(n)]


def make_splits(
    n_train: int,
    n_heldout: int,
    seed: int = 0,
    heldout_fraction: float = 0.25,
    mix: Mapping[str, float] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, heldout)`` rows: the stream is routed by ``is_heldout`` until both are full.

    A larger request extends, never reshuffles, a smaller one: the first rows are the same.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if n_train < 0 or n_heldout < 0:
        raise ValueError(f"n_train and n_heldout must be >= 0, got {n_train}, {n_heldout}")
    return route_split(iter_prompts(seed, mix), n_train, n_heldout, heldout_fraction)


def route_split(rows: Iterable[dict[str, Any]], n_train: int, n_heldout: int, heldout_fraction: float
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first ``n_train`` / ``n_heldout`` rows of a deterministic stream, routed by :func:`is_heldout`
    on each row's ``id`` (the split of every generated dataset: verifiable prompts, math problems)."""
    train: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    for row in rows:
        if len(train) >= n_train and len(heldout) >= n_heldout:
            break
        target, cap = (heldout, n_heldout) if is_heldout(row["id"], heldout_fraction) else (train, n_train)
        if len(target) < cap:
            target.append(row)
    return train, heldout


def validate_row(row: Any, where: str) -> None:
    """Check one prompt row (``id``, ``prompt``, ``constraint``); errors start with ``where``."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("id", "prompt", "constraint"):
        require(row, key, where)
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise DataError(f"{where}: field 'prompt': expected a non-empty string")
    try:
        _check_params(row["constraint"])
    except ValueError as exc:
        raise DataError(f"{where}: field 'constraint': {exc}") from None


def load_prompt_rows(path: str) -> list[dict[str, Any]]:
    """Read and validate a prompt JSONL file (one row per line, blank lines ignored).

    Errors name the file and line, e.g. ``heldout.jsonl:7: missing field 'constraint'``.
    """
    rows = []
    for rec in iter_records(path):
        validate_row(rec.value, rec.where)
        rows.append(rec.value)
    return rows
