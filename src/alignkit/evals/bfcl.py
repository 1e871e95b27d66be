"""``alignkit eval bfcl``: the Berkeley Function Calling Leaderboard's AST evaluation, single-turn categories.

The data are read, as shipped, from the Apache-2.0 ``bfcl-eval`` package (installed ``--no-deps`` as a data
package, like the embedded model; never imported): ``bfcl_eval/data/BFCL_v4_<category>.json`` (one JSON entry a
line: ``id``, ``question``, ``function``) and ``bfcl_eval/data/possible_answer/`` (aligned by line, as BFCL's
``_subset_entries_by_model_ids`` aligns them). What this module reproduces, for prompting-mode models:

* **prompt** (``bfcl_eval/model_handler/utils.py: formulate_system_prompt`` with the default
  ``ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic``): a system prompt
  with the instructions, the Python call-list output format and the function docs as indented JSON, each
  description ending with BFCL's " Note that the provided function is in Python 3 syntax."; a system message of
  the entry is appended after it; rendered with the model's own chat template.
* **parsing** (``default_decode_ast_prompting`` + ``ast_parse``): strip backticks/newlines/spaces, wrap in
  ``[...]``, parse as a Python expression, every element a call; keyword arguments only. Nothing the model
  wrote is executed: where BFCL ``eval``s a binary operation (``2*3``), :func:`_arith` computes it from
  literals only, with size caps, and refuses anything else (BFCL would run it).
* **the AST checker** (``bfcl_eval/eval_checker/ast_eval/ast_checker.py``, Python rules): function name,
  required parameters, unexpected parameters, types (int accepted for float, tuple read as list, one level of
  nested element types, "variables": a value of the possible answers' type when that differs from the doc's),
  string standardisation (case, spaces and ``,./-_*^`` ignored), lists/dicts/lists of dicts, ``""`` marking an
  optional parameter, order-free matching of parallel calls. Error types are BFCL's.
* **irrelevance / relevance** (``_evaluate_single_relevance_entry``): irrelevance is correct when the output does
  not decode to a non-empty call list; relevance when it does.
* **aggregates** (``eval_runner_helper.py: generate_leaderboard_csv``): non-live = unweighted mean of simple,
  multiple, parallel, parallel_multiple (BFCL's "simple" is itself the unweighted mean of simple_python, _java
  and _javascript: only the Python one is implemented here, so ``non_live`` uses simple_python for it and says
  so); live = mean weighted by count of the four live AST categories; irrelevance = unweighted mean of
  irrelevance and live_irrelevance. BFCL's total score weights non-live, live, irrelevance, multi-turn and
  agentic 10/10/10/30/40 (``calculate_percentage_weighted_accuracy``); ``overall`` here is that formula restricted
  to the three single-turn groups (10/10/10, renormalised: their plain mean), labelled as such.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import operator
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alignkit.config import StrictModel
from alignkit.models import DEFAULT_MODEL

BFCL_VERSION = "2026.3.23"
"""The ``bfcl-eval`` release whose data and rules this module follows (Makefile installs it)."""

AST_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple",
                  "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
RELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")
CATEGORIES = AST_CATEGORIES + RELEVANCE_CATEGORIES

GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "non_live": ("unweighted", ("simple_python", "multiple", "parallel", "parallel_multiple")),
    "live": ("weighted", ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")),
    "irrelevance": ("unweighted", ("irrelevance", "live_irrelevance")),
}
"""BFCL's summary columns over the implemented categories (eval_runner_helper.generate_leaderboard_csv)."""
OVERALL_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance": 10}
"""BFCL's total-score weights of the single-turn groups (multi-turn 30 and agentic 40 are not implemented)."""

PROMPT_FORMAT = "ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic"
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
OUTPUT_FORMAT = "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]"
SYSTEM_PROMPT = (
    "You are an expert in composing functions."
    "You are given a question and a set of possible functions. Based on the question, you will need to make one "
    "or more function/tool calls to achieve the purpose. If none of the functions can be used, point it out. If "
    "the given question lacks the parameters required by the function, also point it out."
    "\n\nYou should only return the function calls in your response.\n\nIf you decide to invoke any of the "
    f"function(s), you MUST put it in the format of {OUTPUT_FORMAT}.  You SHOULD NOT include any other text in "
    "the response."
    "\n\nAt each turn, you should try your best to complete the tasks requested by the user within the current "
    "turn. Continue to output functions to call until you have fulfilled the user's request to the best of your "
    "ability. Once you have no more functions to call, the system will consider the current turn complete and "
    "proceed to the next turn or task."
    "\n\nHere is a list of functions in json format that you can invoke.\n{functions}\n"
)
"""BFCL's default system prompt, character for character (persona and task joined without a space, the empty
parameter-type note leaving two spaces, as ``formulate_system_prompt`` builds it)."""

PROTOCOL = {"name": "bfcl-v4-ast-prompting", "version": 1, "bfcl_eval": BFCL_VERSION, "prompt_format": PROMPT_FORMAT}
METRIC = {"name": "bfcl_ast_accuracy", "version": 1}


class BfclError(ValueError):
    """Bad input (unknown category, missing data package, bad results file)."""


# ----------------------------------------------------------------------------------------------- data
def data_dir() -> Path:
    """``bfcl_eval/data`` of the installed data package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BfclError(f"the BFCL data package is not installed: pip install --no-deps bfcl-eval=={BFCL_VERSION} "
                        "(make install does)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_category(category: str) -> list[dict]:
    """The entries of one category, each with ``category`` and (AST categories) ``ground_truth`` added."""
    if category not in CATEGORIES:
        raise BfclError(f"unknown BFCL category {category!r}; choose from {', '.join(CATEGORIES)}")
    root = data_dir()
    entries = _read_lines(root / f"BFCL_v4_{category}.json")
    if category in AST_CATEGORIES:
        answers = _read_lines(root / "possible_answer" / f"BFCL_v4_{category}.json")
        if len(answers) != len(entries):
            raise BfclError(f"{category}: {len(entries)} entries but {len(answers)} possible answers")
        for e, a in zip(entries, answers, strict=True):
            e["ground_truth"] = a["ground_truth"]
    for e in entries:
        e["category"] = category
    return entries


# ----------------------------------------------------------------------------------------------- prompt
def prompt_messages(entry: dict) -> list[dict[str, str]]:
    """The chat messages BFCL sends a prompting-mode model for a single-turn entry."""
    functions = copy.deepcopy(entry["function"])
    for f in functions:
        f["description"] = f["description"] + PYTHON_HINT
    system = SYSTEM_PROMPT.replace("{functions}", json.dumps(functions, indent=4))
    messages = [dict(m) for m in entry["question"][0]]
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = system + "\n\n" + messages[0]["content"]
    else:
        messages.insert(0, {"role": "system", "content": system})
    return messages


# ----------------------------------------------------------------------------------------------- parsing
class DecodeError(ValueError):
    """The output is not a Python list of calls (BFCL: ``ast_decoder:decoder_failed``)."""


_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
          ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
          ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}
_MAX_BITS = 100_000  # largest integer result (in bits) of ** and <<
_MAX_ITEMS = 1_000_000  # longest string or list built by *


def _arith(node: ast.AST) -> Any:
    """Value of a literal expression, as Python evaluates it; anything that is not literal arithmetic is refused
    (BFCL ``eval``s these; a model's output is never run here)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_arith(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_arith(k): _arith(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_arith(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        a, b = _arith(node.left), _arith(node.right)
        _check_size(type(node.op), a, b)
        return _ARITH[type(node.op)](a, b)
    raise DecodeError(f"not a literal expression: {ast.unparse(node)[:80]}")


def _check_size(op: type, a: Any, b: Any) -> None:
    """Refuse arithmetic whose result would be huge (a model could otherwise stall the scorer)."""
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if op is ast.Pow and isinstance(a, int) and isinstance(b, int) and b > 0 and \
            b * max(1, abs(a).bit_length()) > _MAX_BITS:
        raise DecodeError("power too large to evaluate")
    if op is ast.LShift and isinstance(b, int) and b > _MAX_BITS:
        raise DecodeError("shift too large to evaluate")
    if op is ast.Mult:
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, bytes, list, tuple)) and num(n) and len(seq) * n > _MAX_ITEMS:
                raise DecodeError("repetition too large to evaluate")


def _value(node: ast.AST) -> Any:
    """An argument's value by BFCL's ``resolve_ast_by_type`` rules (quirks kept: a bare unary operator negates
    its constant operand, a name is its identifier, a call without keywords is its source text)."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        operand = node.operand
        if isinstance(operand, ast.Constant) and isinstance(operand.value, (int, float, complex)):
            return -operand.value
        raise DecodeError(f"unsupported unary expression: {ast.unparse(node)[:80]}")
    if isinstance(node, ast.List):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.Dict):
        if None in node.keys:
            raise DecodeError("'**' inside a dict literal")
        try:
            return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}
        except TypeError as exc:  # an unhashable key
            raise DecodeError(str(exc)) from None
    if isinstance(node, ast.BinOp):
        try:
            return _arith(node)
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise DecodeError(f"cannot evaluate {ast.unparse(node)[:80]}: {exc}") from None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return ast.unparse(node) if not node.keywords else _call(node)
    if isinstance(node, ast.Tuple):
        return tuple(_value(v) for v in node.elts)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise DecodeError(f"unsupported AST type: {type(node).__name__}")


def _call(node: ast.Call) -> dict[str, dict]:
    """``{dotted.name: {keyword: value}}``; positional arguments are dropped, as BFCL drops them."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return {".".join(reversed(parts)): {kw.arg: _value(kw.value) for kw in node.keywords}}


def decode(text: str) -> list[dict[str, dict]]:
    """The calls in a model's output, ``[{name: {param: value}}]``; :class:`DecodeError` when it is no call list."""
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        body = ast.parse(text.strip().strip("'"), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise DecodeError(f"not a Python expression: {exc}") from None
    if isinstance(body, ast.Call):
        calls = [body]
    elif isinstance(body, (ast.List, ast.Tuple, ast.Set)):
        calls = body.elts
    else:
        raise DecodeError(f"expected a list of calls, got {type(body).__name__}")
    if not all(isinstance(e, ast.Call) for e in calls):
        raise DecodeError("an element of the list is not a function call")
    try:
        return [_call(e) for e in calls]
    except RecursionError:
        raise DecodeError("nested too deeply") from None


# ----------------------------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class Check:
    """One verdict: valid, BFCL's error type and message when not."""

    valid: bool
    error_type: str | None = None
    error: str | None = None
    is_variable: bool = False


OK = Check(True)
PY_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool,
                             "array": list, "tuple": list, "dict": dict, "any": str}


def _fail(error_type: str, error: str) -> Check:
    return Check(False, error_type, error)


def standardize(s: str) -> str:
    """BFCL's string comparison form: no spaces or ``,./-_*^``, lower case, single quotes as double."""
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", s).lower().replace("'", '"')


def _std(x: Any) -> Any:
    return standardize(x) if type(x) is str else x


def _answer_type(answers: list) -> type | None:
    return next((type(a) for a in answers if a != ""), None)


def check_type(param: str, value: Any, answers: list, expected: type, nested: type | None) -> Check:
    """BFCL's ``type_checker``: the doc's type (one nested level for arrays), or the answers' own type
    (a "variable")."""
    answer_type = _answer_type(answers)
    is_variable = answer_type is not None and answer_type != expected
    failed: Check | None = None
    if type(value) is expected:
        if nested is None:
            return Check(True, is_variable=is_variable)
        for item in answers:
            if type(item) is not list or all(check_type(param, v, item, nested, None).valid for v in value):
                return Check(True, is_variable=is_variable)
        failed = _fail("type_error:nested", f"Nested type checking failed for parameter {param!r}.")
    if answer_type is not None and type(value) is answer_type:
        return failed or Check(True, is_variable=True)
    return _fail("type_error:simple", f"Incorrect type for parameter {param!r}. Expected type "
                 f"{expected.__name__}, got {type(value).__name__}. Parameter value: {value!r}.")


def _check_string(param: str, value: str, answers: list) -> Check:
    if standardize(value) not in [standardize(a) for a in answers if type(a) is str]:
        return _fail("value_error:string", f"Invalid value for parameter {param!r}: {value!r}. "
                     f"Expected one of {answers}. Case insensitive.")
    return OK


def _check_list(param: str, value: list, answers: list) -> Check:
    if [_std(v) for v in value] not in [[_std(x) for x in a] for a in answers]:
        return _fail("value_error:list/tuple", f"Invalid value for parameter {param!r}: {value!r}. "
                     f"Expected one of {answers}.")
    return OK


def _check_dict(value: dict, answers: list) -> Check:
    """BFCL's ``dict_checker`` (flat dicts; every key checked against each non-optional answer)."""
    result = _fail("dict_checker:unclear", "")
    for answer in answers:
        if answer == "":
            continue
        result, ok = _fail("dict_checker:unclear", ""), True
        for key, v in value.items():
            if key not in answer:
                result, ok = _fail("value_error:dict_key", f"Unexpected dict key parameter: '{key}'."), False
                break
            if _std(v) not in [_std(x) for x in answer[key]]:
                result, ok = _fail("value_error:dict_value", f"Invalid value for parameter {key!r}: {v!r}."), False
                break
        for key, v in answer.items():
            if key not in value and "" not in v:
                result, ok = _fail("value_error:dict_key", f"Missing dict key parameter: '{key}'."), False
                break
        if ok:
            return OK
    return result


def _check_list_of_dicts(value: list, answers: list) -> Check:
    result = _fail("list_dict_checker:unclear", "")
    for answer in answers:
        if len(value) != len(answer):
            result = _fail("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        ok = True
        for v, a in zip(value, answer, strict=True):
            result = _check_dict(v, [a])
            if not result.valid:
                ok = False
                break
        if ok:
            return OK
    return result


def check_call(doc: dict, call: dict, answer: dict) -> Check:
    """BFCL's ``simple_function_checker`` for Python: one decoded call against one possible-answer call."""
    answers = next(iter(answer.values()))
    name, details = doc["name"], doc["parameters"]["properties"]
    if name not in call:
        return _fail("simple_function_checker:wrong_func_name", f"Function name {name!r} not found in model output.")
    params = call[name]
    for p in doc["parameters"]["required"]:
        if p not in params:
            return _fail("simple_function_checker:missing_required", f"Missing required parameter: {p!r}.")
    for p, value in params.items():
        if p not in details or p not in answers:
            return _fail("simple_function_checker:unexpected_param", f"Unexpected parameter: {p!r}.")
        kind = details[p]["type"]
        expected = PY_TYPES[kind]
        nested = PY_TYPES[details[p]["items"]["type"]] if kind in ("array", "tuple") else None
        if kind == "tuple" and type(value) is tuple:
            value = list(value)
        if kind == "float" and type(value) is int:
            value = float(value)
        typed = check_type(p, value, answers[p], expected, nested)
        if not typed.valid:
            return typed
        if not typed.is_variable:
            if expected is dict:
                res = _check_dict(value, answers[p])
            elif expected is list and nested is dict:
                res = _check_list_of_dicts(value, answers[p])
            elif expected is str:
                res = _check_string(p, value, answers[p])
            elif expected is list:
                res = _check_list(p, value, answers[p])
            else:
                res = None
            if res is not None:
                if not res.valid:
                    return res
                continue
        if value not in answers[p]:
            return _fail("value_error:others", f"Invalid value for parameter {p!r}: {value!r}. "
                         f"Expected one of {answers[p]}.")
    for p in answers:
        if p not in params and "" not in answers[p]:
            return _fail("simple_function_checker:missing_optional",
                         f"Optional parameter {p!r} not provided and not marked as optional.")
    return OK


def _doc(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["name"] == name)


def check_calls(category: str, docs: list[dict], calls: list[dict], truth: list[dict]) -> Check:
    """BFCL's ``ast_checker``: parallel categories match calls in any order, multiple ones check the one call
    against the named function, simple ones against the first function."""
    if "parallel" in category:
        if len(calls) != len(truth):
            return _fail("parallel_function_checker_no_order:wrong_count", "Wrong number of functions.")
        matched: set[int] = set()
        for i, answer in enumerate(truth):
            doc = _doc(docs, next(iter(answer)))
            hit = next((j for j in range(len(calls)) if j not in matched and check_call(doc, calls[j], answer).valid),
                       None)
            if hit is None:
                return _fail("parallel_function_checker_no_order:cannot_find_match",
                             f"Could not find a matching function for index {i} of possible answers.")
            matched.add(hit)
        return OK
    if "multiple" in category:
        if len(calls) != len(truth):
            return _fail("multiple_function_checker:wrong_count", "Wrong number of functions.")
        return check_call(_doc(docs, next(iter(truth[0]))), calls[0], truth[0])
    if len(calls) != 1:
        return _fail("simple_function_checker:wrong_count", "Wrong number of functions.")
    return check_call(docs[0], calls[0], truth[0])


def score_entry(entry: dict, output: str | None) -> dict[str, Any]:
    """One scored row: the raw output, the parsed calls (or the parse error), the verdict and its error type.
    ``output`` None: the prompt left no room to answer (scored as an output with no call, as BFCL scores it)."""
    row: dict[str, Any] = {"id": entry["id"], "category": entry["category"], "output": output}
    try:
        if output is None:
            raise DecodeError("no output: the prompt leaves no room in the model's context window")
        calls = decode(output)
        row["calls"] = _jsonable(calls)
    except DecodeError as exc:
        calls, row["parse_error"] = None, str(exc)
    cat = entry["category"]
    if cat in RELEVANCE_CATEGORIES:
        has_call = bool(calls)
        if cat == "live_relevance":
            verdict = OK if has_call else _fail("relevance_error:decoder_failed", "Failed to decode a function call.")
        else:
            verdict = _fail("irrelevance_error:decoder_success", "Decoded a function call when it should not.") \
                if has_call else OK
    elif calls is None:
        verdict = _fail("ast_decoder:decoder_failed", f"Invalid syntax. Failed to decode AST. {row['parse_error']}")
    else:
        verdict = check_calls(cat, entry["function"], calls, entry["ground_truth"])
    row.update(valid=verdict.valid, error_type=verdict.error_type, error=verdict.error)
    return row


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k if isinstance(k, str) else repr(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (str, int, float, bool)):
        return x if not (isinstance(x, float) and not math.isfinite(x)) else repr(x)
    return repr(x)


# ----------------------------------------------------------------------------------------------- summary
def category_summary(rows: list[dict]) -> dict[str, Any]:
    from alignkit.annotate.agreement import wilson_interval

    n, correct = len(rows), sum(r["valid"] for r in rows)
    ci = wilson_interval(correct, n)
    errors: dict[str, int] = {}
    for r in rows:
        if not r["valid"]:
            errors[r["error_type"]] = errors.get(r["error_type"], 0) + 1
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None,
            "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None,
            "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1]))}


def summarise(per_category: dict[str, dict]) -> dict[str, Any]:
    """BFCL's group scores over the categories present (a group with a missing member is null, not a guess)."""
    groups: dict[str, Any] = {}
    for name, (kind, members) in GROUPS.items():
        missing = [m for m in members if m not in per_category]
        if missing:
            groups[name] = {"accuracy": None, "missing": missing, "kind": kind}
            continue
        accs = [per_category[m]["accuracy"] for m in members]
        ns = [per_category[m]["n"] for m in members]
        acc = sum(a * n for a, n in zip(accs, ns, strict=True)) / sum(ns) if kind == "weighted" else sum(accs) / len(accs)
        groups[name] = {"accuracy": acc, "n": sum(ns), "kind": kind, "members": list(members)}
    if name_missing := [g for g in OVERALL_WEIGHTS if groups[g]["accuracy"] is None]:
        overall = {"accuracy": None, "missing": name_missing}
    else:
        total = sum(OVERALL_WEIGHTS.values())
        overall = {"accuracy": sum(groups[g]["accuracy"] * w for g, w in OVERALL_WEIGHTS.items()) / total}
    overall["weights"] = dict(OVERALL_WEIGHTS)
    overall["note"] = ("BFCL's total-score weights (non-live 10, live 10, irrelevance 10, multi-turn 30, agentic 40) "
                       "restricted to the single-turn groups; not the leaderboard's Overall Acc")
    groups["non_live"]["note"] = "BFCL's simple column averages simple_python/java/javascript; here simple_python only"
    return {"groups": groups, "overall": overall}


# ----------------------------------------------------------------------------------------------- config and run
class BfclConfig(StrictModel):
    """``alignkit eval bfcl``: BFCL's AST evaluation of the single-turn categories."""

    model: str = DEFAULT_MODEL
    """Answers the prompts (embedded name, HF dir or hub id); unused with ``results``."""
    results: str | None = None
    """Score these outputs instead of generating: JSONL rows {"id": "<BFCL id>", "result": "<model output>"}
    (BFCL's result-file rows of a prompting model); only the ids present are scored."""
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES))
    """Categories to evaluate (comma-separated on the command line); default: all single-turn ones."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate the first N entries of each category only (group scores then cover a slice)."""
    max_new_tokens: int = Field(default=512, ge=1)
    """Generation budget per answer (BFCL asks for up to 4096, capped by the context window)."""
    batch_size: int = Field(default=8, ge=1)
    """Prompts per generation batch."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype of the evaluated model."""
    device: str | None = None
    """cpu | cuda (null: the engine's default)."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Generation backend."""
    resume: bool = True
    """Reuse the answers cached in output_dir/predictions.jsonl for identical prompts, model and settings."""
    output_dir: str = "runs/eval/bfcl"
    """results.json, scored.jsonl and the answer cache predictions.jsonl go here."""

    @field_validator("categories")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown BFCL categories {unknown}; choose from {', '.join(CATEGORIES)}")
        if not v:
            raise ValueError("categories is empty")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _one_source(self) -> BfclConfig:
        generation = {"model", "max_new_tokens", "batch_size", "dtype", "device", "backend", "resume"}
        if self.results and (clash := sorted(generation & self.model_fields_set)):
            raise ValueError(f"{', '.join(clash)} set together with results: given outputs are scored as they "
                             "are, nothing is generated")
        return self


def select_entries(cfg: BfclConfig) -> tuple[list[dict], dict[str, int]]:
    """The selected entries (first ``limit`` of each category) and each category's full size."""
    out, sizes = [], {}
    for c in cfg.categories:
        entries = load_category(c)
        sizes[c] = len(entries)
        out.extend(entries[: cfg.limit] if cfg.limit else entries)
    return out, sizes


def read_results(path: str, entries: list[dict]) -> tuple[list[dict], list[str]]:
    """The entries that have a row in ``path`` and the outputs, in the entries' order."""
    from alignkit.data.records import read_objects, require_type

    given: dict[str, str] = {}
    for rec in read_objects(path):
        require_type(rec.value, "id", rec.where, str, "a string")
        if not isinstance(rec.value.get("result"), str):
            raise BfclError(f"{rec.where}: field 'result': expected the model's output text (a string; "
                            "function-calling-mode results are not supported)")
        if rec.value["id"] in given:
            raise BfclError(f"{rec.where}: field 'id': {rec.value['id']!r} appears twice")
        given[rec.value["id"]] = rec.value["result"]
    known = {e["id"] for e in entries}
    stray = [i for i in given if i not in known]
    if stray:
        raise BfclError(f"{path}: {len(stray)} ids are not in the selected categories/limit, e.g. {stray[:3]}")
    kept = [e for e in entries if e["id"] in given]
    return kept, [given[e["id"]] for e in kept]


def generate(cfg: BfclConfig, entries: list[dict], engine: Any = None,
             progress: bool = True) -> tuple[list[str | None], dict, dict]:
    """Greedy answers of ``cfg.model`` through the shared engine; also the decoding settings and the subject.

    As BFCL's local-model handler does, an answer's budget is ``min(max_new_tokens, context - prompt - 2)``; a
    prompt that leaves no room gets no answer (``None``: BFCL records an inference error, which decodes to no
    call). Answers are cached in ``output_dir/predictions.jsonl`` as they finish (the eval runner's cache), so an
    interrupted run resumes."""
    from alignkit.evals.runner import PredictionCache, generate_all, subject_components
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.progress import ProgressBar

    if engine is None:
        kw: dict[str, Any] = {"dtype": cfg.dtype, "batch_size": cfg.batch_size}
        if cfg.device:
            kw["device"] = cfg.device
        engine = make_engine(cfg.model, backend=cfg.backend, **kw)
    subject = subject_components(cfg.model, engine, cfg.dtype)
    key_base = {"model": subject["model"]["sha256"], "dtype": cfg.dtype, "tokenizer": subject["tokenizer"]["sha256"],
                "chat_template": subject["chat_template"]["sha256"]}
    cache = PredictionCache(Path(cfg.output_dir) / "predictions.jsonl", cfg.resume)
    prompts = [prompt_messages(e) for e in entries]
    room = int(engine.max_context)
    budgets = [min(cfg.max_new_tokens, room - len(engine.encode(p)) - 2) for p in prompts]
    outputs: list[str | None] = [None] * len(prompts)
    with ProgressBar("bfcl", sum(b >= 1 for b in budgets), progress) as bar:
        for budget in sorted({b for b in budgets if b >= 1}, reverse=True):
            idx = [i for i, b in enumerate(budgets) if b == budget]
            params = SamplingParams(max_new_tokens=budget, temperature=0.0)
            gens = generate_all(engine, [prompts[i] for i in idx], params, True, cache, key_base, bar)
            for i, g in zip(idx, gens, strict=True):
                outputs[i] = g["text"]
    defaults = SamplingParams()
    decoding = {"strategy": "greedy", "max_new_tokens": cfg.max_new_tokens,
                "budget": "min(max_new_tokens, context - prompt_tokens - 2)", "temperature": 0.0,
                "top_p": defaults.top_p, "top_k": defaults.top_k, "min_new_tokens": defaults.min_new_tokens,
                "stop_strings": [], "backend": cfg.backend}
    return outputs, decoding, subject


def signature(category: str, entries: list[dict], decoding: dict, subject: dict):
    from alignkit.evals.signature import Signature
    from alignkit.fingerprints import dataset_hash, sha256_hex

    return Signature({
        "metric": dict(METRIC),
        "task": {"name": f"bfcl/{category}", "system_prompt_sha256": sha256_hex(SYSTEM_PROMPT),
                 "python_hint": PYTHON_HINT},
        "chat_policy": {"apply_chat_template": True},
        "decoding": decoding,
        "dataset": {"sha256": dataset_hash([{k: e.get(k) for k in ("id", "question", "function", "ground_truth")}
                                            for e in entries]),
                    "n": len(entries), "bfcl_eval": BFCL_VERSION},
        "protocol": dict(PROTOCOL),
        **subject,
    })


def run_bfcl(cfg: BfclConfig, engine: Any = None, progress: bool = True) -> dict[str, Any]:
    """Generate (or read) the outputs, score them, write ``scored.jsonl`` and ``results.json``."""
    from alignkit.evals.report import atomic_write
    from alignkit.evals.signature import Signature, aggregate_signature
    from alignkit.fingerprints import sha256_hex
    from alignkit.generate.jsonl import write_jsonl_atomic

    entries, sizes = select_entries(cfg)
    if cfg.results:
        entries, outputs = read_results(cfg.results, entries)
        decoding = {"strategy": "given", "max_new_tokens": None}
        subject = {"model": {"name": f"results:{Path(cfg.results).name}",
                             "sha256": sha256_hex(Path(cfg.results).read_text(encoding="utf-8")), "dtype": None}}
    else:
        outputs, decoding, subject = generate(cfg, entries, engine, progress)
    started = time.perf_counter()
    scored = [score_entry(e, o) for e, o in zip(entries, outputs, strict=True)]
    scoring_s = time.perf_counter() - started
    by_cat: dict[str, list[dict]] = {}
    for e, r in zip(entries, scored, strict=True):
        by_cat.setdefault(e["category"], []).append(r)
    per_category, sigs = {}, {}
    for cat, rows in by_cat.items():
        sigs[cat] = signature(cat, [e for e in entries if e["category"] == cat], decoding, subject)
        per_category[cat] = {**category_summary(rows), "of": sizes[cat], "signature": sigs[cat].to_dict()}
    summary = summarise(per_category)
    subj = Signature({k: v for k, v in subject.items() if k in ("model", "tokenizer")})
    for name, g in summary["groups"].items():
        if g["accuracy"] is not None:
            g["signature"] = aggregate_signature(f"bfcl/{name}", {m: sigs[m] for m in g["members"]}, subj).to_dict()
    if summary["overall"]["accuracy"] is not None:
        members = {m: sigs[m] for g in OVERALL_WEIGHTS for m in GROUPS[g][1]}
        summary["overall"]["signature"] = aggregate_signature("bfcl/overall", members, subj).to_dict()
    results = {
        "benchmark": f"BFCL v4 single-turn AST (bfcl-eval {BFCL_VERSION}), prompting mode",
        "source": cfg.results or cfg.model,
        "limit": cfg.limit,
        "n": len(scored),
        "correct": sum(r["valid"] for r in scored),
        "no_room_to_answer": sum(r["output"] is None for r in scored),
        "overall": summary["overall"],
        "groups": summary["groups"],
        "categories": per_category,
        "scoring_seconds": round(scoring_s, 3),
    }
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "scored.jsonl", scored)
    atomic_write(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results
