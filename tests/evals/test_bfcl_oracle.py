"""BFCL's own code is the oracle: our prompt, parser, checker verdicts and aggregates must agree with it.

The oracle modules of the installed ``bfcl-eval`` data package (``ast_checker.py``, ``model_handler/utils.py``,
``eval_runner_helper.py``) are imported unmodified. Their module-level imports of things this checker never
uses (every model handler via ``constants.model_config``, ``tenacity``, the tree-sitter Java/JS parsers) are
replaced by stubs, so no dependency is installed for the oracle; ``BFCL_PROJECT_ROOT`` points the package's
import-time ``mkdir`` of result folders at a temp dir. The per-entry glue of ``eval_runner.py``
(``_evaluate_single_ast_entry`` / ``_evaluate_single_relevance_entry``: decode, catch, format check, check) is
restated in :func:`oracle_verdict`; everything it calls is the oracle's.
"""

from __future__ import annotations

import copy
import random
import sys
import types

import pytest

from alignkit.evals import bfcl

STUBS = {
    "bfcl_eval.constants.model_config": {"MODEL_CONFIG_MAPPING": None},  # filled below
    "tenacity": {n: (lambda *a, **k: None) for n in
                 ("retry", "retry_if_exception_message", "retry_if_exception_type", "wait_random_exponential")},
    "bfcl_eval.model_handler.parser.java_parser": {"parse_java_function_call": None},
    "bfcl_eval.model_handler.parser.js_parser": {"parse_javascript_function_call": None},
}


class _Config:
    underscore_to_dot = False  # a prompting-mode local model: dotted names stay dotted


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    import collections
    import os

    saved = dict(sys.modules)
    old_root = os.environ.get("BFCL_PROJECT_ROOT")
    os.environ["BFCL_PROJECT_ROOT"] = str(tmp_path_factory.mktemp("bfcl_root"))
    for name, attrs in STUBS.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
    sys.modules["bfcl_eval.constants.model_config"].MODEL_CONFIG_MAPPING = collections.defaultdict(_Config)
    import importlib

    ns = types.SimpleNamespace(
        checker=importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker"),
        handler_utils=importlib.import_module("bfcl_eval.model_handler.utils"),
        utils=importlib.import_module("bfcl_eval.utils"),
        helper=importlib.import_module("bfcl_eval.eval_checker.eval_runner_helper"),
        enums=importlib.import_module("bfcl_eval.constants.enums"),
    )
    yield ns
    for name in list(sys.modules):  # only the oracle and the stubs: numpy/pandas stay loaded once per process
        if name not in saved and (name.startswith("bfcl_eval") or name in STUBS):
            del sys.modules[name]
    sys.modules.update({name: saved[name] for name in STUBS if name in saved})  # a real module we shadowed
    if old_root is None:
        os.environ.pop("BFCL_PROJECT_ROOT", None)
    else:
        os.environ["BFCL_PROJECT_ROOT"] = old_root


def oracle_verdict(o, entry: dict, output: str) -> tuple[bool, str | None]:
    """eval_runner.py's per-entry logic for prompting models, on the oracle's decoder and checker."""
    py = o.enums.ReturnFormat.PYTHON
    cat = entry["category"]
    try:
        decoded = o.handler_utils.default_decode_ast_prompting(output, py, False)
    except Exception:  # noqa: BLE001 - exactly what eval_runner catches
        decoded = None
    if cat in bfcl.RELEVANCE_CATEGORIES:
        has_call = decoded is not None and not o.utils.is_empty_output(decoded)
        if "irrelevance" in cat:
            return (True, None) if not has_call else (False, "irrelevance_error:decoder_success")
        return (True, None) if has_call else (False, "relevance_error:decoder_failed")
    if decoded is None:
        return False, "ast_decoder:decoder_failed"
    if not o.utils.is_function_calling_format_output(decoded):
        return False, "ast_decoder:decoder_wrong_output_format"
    res = o.checker.ast_checker(entry["function"], decoded, entry["ground_truth"], o.enums.Language.PYTHON,
                                cat, "stub-model")
    return res["valid"], (None if res["valid"] else res["error_type"])


# ----------------------------------------------------------------------------------- model outputs
def _concrete(v):
    """A possible answer's dict (or list of dicts) holds lists of options per key: pick the first of each."""
    if isinstance(v, dict):
        return {k: _first_option(opts) for k, opts in v.items() if _first_option(opts) != ""}
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return [_concrete(x) for x in v]
    return v


def _first_option(options: list):
    if not isinstance(options, list):
        return options
    return _concrete(next((v for v in options if v != ""), ""))


def _required_only(options: list):
    """What the possible answers mark optional is omitted (""); otherwise the first option."""
    return "" if "" in options else _first_option(options)


def _call_src(name: str, args: dict) -> str:
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _truth_calls(entry: dict, pick=_first_option) -> list[tuple[str, dict]]:
    calls = []
    for call in entry["ground_truth"]:
        name, params = next(iter(call.items()))
        calls.append((name, {k: pick(v) for k, v in params.items() if pick(v) != ""}))
    return calls


def _render(calls: list[tuple[str, dict]]) -> str:
    return "[" + ", ".join(_call_src(n, a) for n, a in calls) + "]"


def _mutate_value(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v + 0.5
    if isinstance(v, str):
        return v + " extra"
    if isinstance(v, list):
        return v[:-1] if v else ["x"]
    if isinstance(v, dict):
        return {**v, "unexpected_key": 1}
    return "x"


def _wrong_type(v):
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return 7
    if isinstance(v, list):
        return tuple(v) if v else "[]"
    return [v]


def outputs_for(entry: dict, rng: random.Random) -> list[str]:
    """The ground truth rendered as model outputs, then systematic mutations of it, then free-form text."""
    outs = ["I cannot help with that.", "[]", "```python\n[f(x=1)]\n```", "[1, 2]", "func(a=1", "[math.sqrt(x=4)]"]
    docs = entry["function"]
    if not docs:
        return outs
    first = docs[0]
    req = first["parameters"].get("required", [])
    outs.append(_call_src(first["name"], {p: 1 for p in req}))
    if "ground_truth" not in entry:
        outs.append(_render([(first["name"], {})]))
        return outs
    calls = _truth_calls(entry)
    outs += [_render(calls), _render(calls)[1:-1], "```\n" + _render(calls) + "\n```",
             _render(_truth_calls(entry, pick=lambda v: ([x for x in v if x != ""] or [""])[-1])),
             _render(calls[::-1]), _render(calls[:-1]), _render(calls + calls[:1])]
    i = rng.randrange(len(calls))
    name, args = calls[i]
    doc = next(d for d in docs if d["name"] == name)
    props, required = doc["parameters"]["properties"], doc["parameters"].get("required", [])

    def with_call(new_name, new_args):
        return _render(calls[:i] + [(new_name, new_args)] + calls[i + 1:])

    outs.append(with_call(name + "_wrong", args))
    others = [d["name"] for d in docs if d["name"] != name]
    if others:
        outs.append(with_call(others[0], args))
    outs.append(with_call(name, {**args, "extra_param": 1}))
    for p in list(args)[:3]:
        outs.append(with_call(name, {k: v for k, v in args.items() if k != p}))  # drop (required or optional)
        outs.append(with_call(name, {**args, p: _mutate_value(args[p])}))
        outs.append(with_call(name, {**args, p: _wrong_type(args[p])}))
        if isinstance(args[p], str):
            outs.append(with_call(name, {**args, p: args[p].upper()}))
        if isinstance(args[p], float) and args[p].is_integer():
            outs.append(with_call(name, {**args, p: int(args[p])}))
        if isinstance(args[p], list):
            outs.append(with_call(name, {**args, p: tuple(args[p])}))
    for p in props:
        if p not in args and p not in required:
            outs.append(with_call(name, {**args, p: "some value"}))
            break
    return outs


def _entries(categories=bfcl.CATEGORIES):
    return [e for c in categories for e in bfcl.load_category(c)]


# ----------------------------------------------------------------------------------- tests
def test_verdicts_agree_with_bfcl_on_every_entry_and_its_mutations(oracle):
    rng = random.Random(0)
    total, disagreements, valid_seen, kinds = 0, [], 0, set()
    for entry in _entries():
        for out in outputs_for(entry, rng):
            ours = bfcl.score_entry(entry, out)
            expect = oracle_verdict(oracle, copy.deepcopy(entry), out)
            total += 1
            valid_seen += expect[0]
            kinds.add(expect[1])
            if (ours["valid"], ours["error_type"]) != expect:
                disagreements.append((entry["id"], out[:120], (ours["valid"], ours["error_type"]), expect))
    assert not disagreements, f"{len(disagreements)}/{total} disagree, e.g. {disagreements[:5]}"
    assert total > 50_000 and valid_seen > 10_000  # a large sample, both verdicts well represented
    assert {"simple_function_checker:missing_required", "simple_function_checker:unexpected_param",
            "simple_function_checker:wrong_func_name", "simple_function_checker:missing_optional",
            "type_error:simple", "value_error:string", "value_error:others", "value_error:list/tuple",
            "value_error:dict_value", "parallel_function_checker_no_order:wrong_count",
            "parallel_function_checker_no_order:cannot_find_match", "multiple_function_checker:wrong_count",
            "simple_function_checker:wrong_count", "ast_decoder:decoder_failed",
            "irrelevance_error:decoder_success", "relevance_error:decoder_failed"} <= kinds


UNSATISFIABLE = 4  # live_simple_106-63-0, live_simple_112-68-0, live_multiple_862-181-3, live_multiple_964-207-0


def test_every_ground_truth_scores_valid(oracle):
    """Rendered with what the doc requires or the answers do not mark optional (first option each)."""
    invalid = []
    for entry in _entries(bfcl.AST_CATEGORIES):
        calls = []
        for call in entry["ground_truth"]:
            name, params = next(iter(call.items()))
            required = next(d for d in entry["function"] if d["name"] == name)["parameters"]["required"]
            calls.append((name, {k: _first_option(v) for k, v in params.items()
                                 if k in required or _required_only(v) != ""}))
        out = _render(calls)
        row = bfcl.score_entry(entry, out)
        assert (row["valid"], row["error_type"]) == oracle_verdict(oracle, entry, out), entry["id"]
        if not row["valid"]:
            invalid.append(entry["id"])
    # a few entries have no valid rendering of this kind (a required parameter whose only answer is "")
    assert len(invalid) <= UNSATISFIABLE, invalid


@pytest.mark.parametrize("output", [
    "[f(a=2*3, b='x'+'y', c=[1]*2, d=-5, e=g(1), h=v[0], i=n, j=(1, 2), k={'a': 1}, m=...)]",
    "[f(a=-True)]", "[f(a=-x)]", "[f(a=1/0)]", "[f(a=lambda: 1)]", "[f(a={**x})]", "[f(a={[1]: 2})]",
    "[f(**kw)]", "[a.b.c(x=1), d(1, y=2)]", "[f(a=1) for f in g]", "[f(a=1)][0]", "[x[0](a=1)]", "[f(a=1<2)]",
    "'[f(a=1)]'", "[f(a=2**100, b='ab'*3, c=1<<70)]", "[f(a=2**3, b=7//2, c=7%3, d=1|2, e=True+1, f=(1,)+(2,))]", "[f(a={1}|{2})]",
])
def test_decoder_matches_bfcl(oracle, output):
    py = oracle.enums.ReturnFormat.PYTHON
    try:
        expect = oracle.handler_utils.default_decode_ast_prompting(output, py, False)
    except Exception:  # noqa: BLE001
        expect = None
    try:
        ours = bfcl.decode(output)
    except bfcl.DecodeError:
        ours = None
    assert ours == expect


def test_model_output_is_never_executed():
    with pytest.raises(bfcl.DecodeError):
        bfcl.decode("[f(a=__import__('os').system('true') + 1)]")
    with pytest.raises(bfcl.DecodeError):
        bfcl.decode("[f(a=2**10**10)]")
    with pytest.raises(bfcl.DecodeError):
        bfcl.decode("[f(a='x'*10**9)]")


def test_prompt_is_bfcls(oracle):
    for entry in _entries():
        fns = oracle.utils._func_doc_language_specific_pre_processing(copy.deepcopy(entry["function"]),
                                                                      entry["category"])
        expect = oracle.handler_utils.system_prompt_pre_processing_chat_model(
            copy.deepcopy(entry["question"][0]), fns, entry["id"])
        assert bfcl.prompt_messages(entry) == expect, entry["id"]


def test_aggregates_are_bfcls(oracle):
    rng = random.Random(1)
    per_cat = {c: {"accuracy": rng.random(), "n": rng.randrange(5, 900)} for c in bfcl.CATEGORIES}
    ours = bfcl.summarise(per_cat)
    h = oracle.helper

    def d(c):
        return {"accuracy": per_cat[c]["accuracy"], "total_count": per_cat[c]["n"], "display_accuracy": 0}

    non_live = h.calculate_unweighted_accuracy([d(c) for c in bfcl.GROUPS["non_live"][1]])
    live = h.calculate_weighted_accuracy([d(c) for c in bfcl.GROUPS["live"][1]])
    irr = h.calculate_unweighted_accuracy([d("irrelevance"), d("live_irrelevance")])
    total = h.calculate_percentage_weighted_accuracy([non_live, live, irr], [10, 10, 10])
    assert ours["groups"]["non_live"]["accuracy"] == pytest.approx(non_live["accuracy"])
    assert ours["groups"]["live"]["accuracy"] == pytest.approx(live["accuracy"])
    assert ours["groups"]["irrelevance"]["accuracy"] == pytest.approx(irr["accuracy"])
    assert ours["overall"]["accuracy"] == pytest.approx(total["accuracy"])
