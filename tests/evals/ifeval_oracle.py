"""The test oracle: lm-eval's IFEval checker code (``lm_eval/tasks/ifeval``), installed by ``make test``
(``pip install --no-deps lm_eval``; dev extra: langdetect, nltk, immutabledict). Never imported by src/.

The three ifeval modules are imported without ``lm_eval/tasks/__init__.py`` (it pulls in the task
manager and lm-eval's heavy dependencies, which the checkers do not use). NLTK's English Punkt
parameters are written in NLTK's ``punkt_tab`` format into a private data folder, as ``nltk.download``
would, so the oracle runs offline; langdetect's global factory is seeded like alignkit's detector.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

ORACLE_MODULES = ("lm_eval.tasks", "lm_eval.tasks.ifeval", "lm_eval.tasks.ifeval.instructions_util",
                  "lm_eval.tasks.ifeval.instructions", "lm_eval.tasks.ifeval.instructions_registry",
                  "lm_eval.tasks.ifeval.utils")


def write_punkt_tab(root: Path) -> Path:
    """The English Punkt parameters alignkit uses, as NLTK's ``tokenizers/punkt_tab/english`` files."""
    from punkt.data import english

    d = root / "tokenizers" / "punkt_tab" / "english"
    d.mkdir(parents=True, exist_ok=True)
    (d / "abbrev_types.txt").write_text("\n".join(sorted(english.ABBREV_TYPES)), encoding="utf-8")
    (d / "sent_starters.txt").write_text("\n".join(sorted(english.SENT_STARTERS)), encoding="utf-8")
    (d / "collocations.tab").write_text("\n".join(f"{a}\t{b}" for a, b in sorted(english.COLLOCATIONS)),
                                        encoding="utf-8")
    (d / "ortho_context.tab").write_text("\n".join(f"{k}\t{v}" for k, v in sorted(english.ORTHO_CONTEXT.items())),
                                         encoding="utf-8")
    return root


@contextlib.contextmanager
def nltk_data(root: Path):
    """NLTK finds the written ``punkt_tab`` under ``root`` (first on its search path) while inside."""
    import nltk

    write_punkt_tab(root)
    nltk.data.path.insert(0, str(root))
    try:
        yield root
    finally:
        nltk.data.path.remove(str(root))


@contextlib.contextmanager
def lm_eval_ifeval(root: Path):
    """lm-eval's ``tasks/ifeval/utils`` module (its checkers and scoring functions), offline and seeded."""
    import langdetect

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise RuntimeError("the IFEval test oracle lm_eval is not installed: run `make test` (or "
                           "`pip install --no-deps lm_eval==0.4.13 langdetect immutabledict`)")
    saved = {m: sys.modules.get(m) for m in ORACLE_MODULES}
    seed = langdetect.DetectorFactory.seed
    tasks = types.ModuleType("lm_eval.tasks")
    tasks.__path__ = [str(Path(spec.origin).parent / "tasks")]
    sys.modules["lm_eval.tasks"] = tasks
    langdetect.DetectorFactory.seed = 0
    try:
        with nltk_data(root):
            from lm_eval.tasks.ifeval import utils

            yield utils
    finally:
        langdetect.DetectorFactory.seed = seed
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
