"""The offline text analyses under IFEval: NLTK's English Punkt without a download, seeded langdetect."""

from __future__ import annotations

import hashlib

import pytest
from tests.evals.ifeval_oracle import nltk_data

from alignkit.evals.ifeval import text

# NLTK's published tokenizers/punkt_tab/english files (nltk_data, punkt_tab.zip): the sha256 of their
# lines, sorted, and the size of ortho_context.tab. Obtained from a vendored copy of nltk_data whose
# files match the sha256 recorded for them in an independent Git LFS pointer.
NLTK_SORTED_SHA256 = {
    "abbrev_types": "0ab7d6b126eed733d9bc5733d3a51ea575e90ece1b908e77c9d5b74e2a54213a",
    "collocations": "73d7f183e9cf31ee6edf41df100a6f57c72404db66f599fe86b3fb2e6148f35f",
    "sent_starters": "8a66e19f1bf6a03061dbcda945e46839d09612f8235dbcb1b994f59184ecc989",
}
NLTK_ORTHO_CONTEXT_BYTES = 236303
# entries read from NLTK's ortho_context.tab (a sample: orthographic-context bit flags per word type)
NLTK_ORTHO_SAMPLE = {"via": 104, "litton": 6, "raytheon": 10, "to": 126, "when": 110, "dr.": 14, "mr.": 14,
                     "n.y.": 4, "e.f.": 6, "yesterday": 106, "doesn": 98, "u": 12, "r-revised": 16,
                     "mrs": 8, "feb": 12, "jan": 4, "robot": 64, "la": 46}

TEXTS = [
    "Dr. Smith went home. He was tired.",
    "It costs $3.50 in the U.S. today. Really? Yes! ... And then... nothing.",
    "Mr. and Mrs. J. R. R. Tolkien lived at No. 5. They wrote e.g. books, i.e. novels.",
    "The meeting is at 5 p.m. on Jan. 3. Bring your notes.",
    '"Stop." she said. "Now!" He did not.\n\nA new paragraph starts here. It ends here',
    "Section 1\nItem one.\n* bullet. Another.\nP.S. Late note. Final words",
    "no punctuation at all",
    "",
    "Hello World. THIS IS LOUD. U.S.A. is big. OK, fine!",
    "Prices rose 3.2% in Q1. Analysts, e.g. Goldman Sachs, expected 2.9%. Stocks fell.",
    "He said “Hello there.” Bye. (Quoted.) [Bracketed.] Done.",
]


def test_punkt_parameters_are_nltks_english_punkt_tab():
    from punkt.data import english

    def sorted_sha(lines):
        return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()

    assert sorted_sha(english.ABBREV_TYPES) == NLTK_SORTED_SHA256["abbrev_types"]
    assert sorted_sha(f"{a}\t{b}" for a, b in english.COLLOCATIONS) == NLTK_SORTED_SHA256["collocations"]
    assert sorted_sha(english.SENT_STARTERS) == NLTK_SORTED_SHA256["sent_starters"]
    ortho = "\n".join(f"{k}\t{v}" for k, v in english.ORTHO_CONTEXT.items())
    assert len(ortho.encode()) == NLTK_ORTHO_CONTEXT_BYTES
    assert {k: english.ORTHO_CONTEXT[k] for k in NLTK_ORTHO_SAMPLE} == NLTK_ORTHO_SAMPLE
    assert not english.NUMERIC_ABBREV_TYPES


def test_sentences_and_words_equal_nltks_punkt_loaded_the_way_lm_eval_loads_it(tmp_path):
    import nltk

    with nltk_data(tmp_path):
        reference = nltk.data.load("nltk:tokenizers/punkt/english.pickle")  # lm-eval's call
        for t in TEXTS:
            assert text.split_sentences(t) == reference.tokenize(t), t
            assert text.word_tokenize(t) == nltk.word_tokenize(t), t
    assert text.count_sentences(TEXTS[0]) == 2
    assert text.split_sentences(TEXTS[3]) == ["The meeting is at 5 p.m. on Jan. 3.", "Bring your notes."]


def test_sentence_splitting_needs_no_nltk_data(monkeypatch):
    import nltk

    def refuse(*args, **kwargs):
        pytest.fail("NLTK's data loader or downloader was called")

    for name in ("find", "load"):
        monkeypatch.setattr(nltk.data, name, refuse)
    monkeypatch.setattr(nltk, "download", refuse)
    text._sentence_tokenizer.cache_clear()
    text._punkt_parameters.cache_clear()
    assert text.count_sentences("One. Two. Three.") == 3
    assert text.word_tokenize("It WORKS. OK?") == ["It", "WORKS", ".", "OK", "?"]


def test_words_are_word_character_runs():
    assert text.count_words("Hello, world! It's 2024 -- don't-stop_now") == 8


def test_language_detection_is_seeded_and_leaves_langdetect_global_state_alone():
    import langdetect

    before = langdetect.DetectorFactory.seed
    sample = "Ciao, come stai? Bene grazie e tu? Oggi fa bello."
    answers = {text.detect_language(sample) for _ in range(5)}
    assert answers == {"it"}
    assert langdetect.DetectorFactory.seed == before
    with pytest.raises(text.LanguageUndetectable):
        text.detect_language("12345 !!!")
    ident = text.identity()
    assert ident["language_detection"]["seed"] == 0 and ident["sentences"]["parameters_sha256"]
