"""The tool protocol: schemas, argument validation, failures as observations, parallel calls with timeouts."""

from __future__ import annotations

import json
import time

import pytest
from tests.tools.conftest import make_sandbox

from alignkit.config import ConfigError
from alignkit.tools import (
    SandboxConfig,
    Tool,
    ToolCall,
    ToolOutput,
    ToolRegistry,
    ToolsConfig,
    UserToolConfig,
    build_registry,
    calculator_tool,
    function_tool,
    python_tool,
)
from alignkit.tools.registry import truncate_middle
from alignkit.tools.schema import check_schema, validate

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["C", "F"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def weather(city: str, days: int = 1, unit: str = "C", tags: list | None = None) -> dict:
    if city == "Atlantis":
        raise LookupError("no such city")
    return {"city": city, "days": days, "unit": unit}


# ------------------------------------------------------------------------------------------ schemas
def test_validate_reports_every_problem_with_its_path():
    assert validate({"city": "Paris", "days": 3, "tags": ["a"]}, WEATHER) == []
    problems = validate({"days": True, "unit": "K", "tags": ["a", 2, "c"], "x": 1}, WEATHER)
    assert problems == [
        "arguments.city: required property missing",
        "arguments.days: expected integer, got boolean True",
        "arguments.unit: 'K' is not one of ['C', 'F']",
        "arguments.tags: item count 3 is above the maximum 2",
        "arguments.tags[1]: expected string, got integer 2",
        "arguments.x: unexpected property (allowed: ['city', 'days', 'tags', 'unit'])",
    ]
    assert validate({"city": "", "days": 0}, WEATHER) == [
        "arguments.city: length 0 is below the minimum 1", "arguments.days: value 0 is below the minimum 1"]
    assert validate(3.5, {"type": ["integer", "null"]}) == ["arguments: expected integer or null, got number 3.5"]
    assert validate(2, {"type": "number"}) == []


def test_schemas_with_unchecked_keywords_are_refused():
    check_schema(WEATHER)
    with pytest.raises(ConfigError, match=r"parameters.properties.code: unsupported JSON-schema keyword\(s\) \['pattern'\]"):
        check_schema({"type": "object", "properties": {"code": {"type": "string", "pattern": "^a"}}})
    with pytest.raises(ConfigError, match="parameters.type: 'dict'"):
        check_schema({"type": "dict"})
    with pytest.raises(ConfigError, match="parameters must be a JSON schema with type 'object'"):
        function_tool("f", "", {"type": "string"}, str)
    with pytest.raises(ConfigError, match="tool name 'a b'"):
        function_tool("a b", "", {"type": "object"}, str)


def test_spec_is_the_openai_function_format():
    tool = function_tool("weather", "Forecast.", WEATHER, weather)
    assert tool.spec() == {"type": "function",
                           "function": {"name": "weather", "description": "Forecast.", "parameters": WEATHER}}


# ------------------------------------------------------------------------------------------ calls
def test_every_failure_becomes_the_observation():
    with ToolRegistry([function_tool("weather", "", WEATHER, weather), calculator_tool()]) as reg:
        ok = reg.call(ToolCall("weather", '{"city": "Paris", "days": 2}', "c1"))
        assert (ok.call_id, ok.name, ok.error) == ("c1", "weather", None)
        assert json.loads(ok.content) == {"city": "Paris", "days": 2, "unit": "C"}
        cases = [
            (ToolCall("wheather", "{}"), "unknown tool 'wheather'; available: ['calculator', 'weather']"),
            (ToolCall("weather", '{"city": "Paris",}'), "arguments of weather are not valid JSON (Expecting property "
                                                       "name enclosed in double quotes: line 1 column 18 (char 17))"),
            (ToolCall("weather", '["Paris"]'), "arguments of weather must be a JSON object, got list"),
            (ToolCall("weather", '{"city": 7}'), "invalid arguments for weather: arguments.city: expected string, got integer 7"),
            (ToolCall("weather", {"city": "Atlantis"}), "LookupError: no such city"),
            (ToolCall("calculator", {"expression": "1/0"}), "ZeroDivisionError: division by zero"),
            (ToolCall("calculator", {"expression": "__import__('os')"}),
                "not allowed in a calculator expression: \"__import__('os')\""),
        ]
        for call, error in cases:
            r = reg.call(call)
            assert (r.error, r.content) == (error, f"error: {error}"), call
        assert reg.call(ToolCall("calculator", '{"expression": "2 ** 10 / 4"}')).content == "256"


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="two tools are named 'calculator'"):
        ToolRegistry([calculator_tool(), calculator_tool()])


def test_calls_run_in_parallel_each_with_its_timeout():
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return f"slept {seconds}"

    tool = function_tool("slow", "", {"type": "object", "properties": {"seconds": {"type": "number"}}}, slow)
    with ToolRegistry([tool], max_parallel=4) as reg:
        start = time.monotonic()
        results = reg.call_many([ToolCall("slow", {"seconds": 0.5}, str(i)) for i in range(3)]
                                + [ToolCall("slow", {"seconds": 30}, "stuck")], timeout_s=1.0)
        elapsed = time.monotonic() - start
    assert [r.content for r in results[:3]] == ["slept 0.5"] * 3 and [r.call_id for r in results] == ["0", "1", "2", "stuck"]
    assert results[3].error == "timed out after 1 s" and results[3].content == "error: slow timed out after 1 s"
    assert elapsed < 2.5  # parallel: not 3 x 0.5 + 1 in sequence, and the stuck call did not hold the batch


def test_long_observations_keep_head_and_tail():
    text = "HEAD" + "x" * 10_000 + "TAIL"
    cut = truncate_middle(text, 200)
    assert cut.startswith("HEAD") and cut.endswith("TAIL") and len(cut) <= 200
    assert "characters cut]" in cut and truncate_middle("short", 200) == "short"
    echo = function_tool("echo", "", {"type": "object"}, lambda: text)
    with ToolRegistry([echo], max_observation_chars=300) as reg:
        assert reg.call(ToolCall("echo", "")).content == truncate_middle(text, 300)


def test_user_tools_from_config():
    cfg = ToolsConfig(builtin=["calculator"], user=[UserToolConfig(
        function="textwrap:shorten", name="shorten", description="Shorten text.",
        parameters={"type": "object", "properties": {"text": {"type": "string"}, "width": {"type": "integer"}},
                    "required": ["text", "width"]})])
    with build_registry(cfg) as reg:
        assert [s["function"]["name"] for s in reg.specs()] == ["calculator", "shorten"]
        r = reg.call(ToolCall("shorten", {"text": "Hello brave new world", "width": 12}))
        assert (r.content, r.error) == ("Hello [...]", None)
    bad = ToolsConfig(builtin=[], user=[UserToolConfig(function="textwrap:nope", parameters={"type": "object"})])
    with pytest.raises(ConfigError, match=r"tools.user\[0\].function='textwrap:nope': cannot import it"):
        build_registry(bad)
    with pytest.raises(ConfigError, match="expected 'package.module:name'"):
        build_registry(ToolsConfig(builtin=[], user=[UserToolConfig(function="textwrap", parameters={"type": "object"})]))


def test_tool_outputs_are_not_trusted_to_be_short():
    big = Tool("big", "", {"type": "object"}, lambda args, timeout_s: ToolOutput("y" * 50_000))
    with ToolRegistry([big], max_observation_chars=1000) as reg:
        assert len(reg.call(ToolCall("big", {})).content) <= 1000


# ------------------------------------------------------------------------------------------ python tool
def test_python_tool_observation_and_parallel_timeouts():
    sb = make_sandbox()
    with ToolRegistry([python_tool(sb)], max_parallel=4) as reg:
        calls = [ToolCall("python", {"code": "print(6 * 7)"}, "a"),
                 ToolCall("python", json.dumps({"code": "print('x')\n1/0"}), "b"),
                 ToolCall("python", {"code": "while True: pass"}, "c"),
                 ToolCall("python", {"code": ""}, "d")]
        a, b, c, d = reg.call_many(calls, timeout_s=2.0)
    assert (a.content, a.error) == ("42\n", None)
    assert b.error == "ZeroDivisionError: division by zero"
    assert b.content.startswith("x\n\n[stderr]\nTraceback") and b.content.endswith("[error] ZeroDivisionError: division by zero")
    assert c.error == "timed out after 2 s (wall time)" and c.seconds < 6
    assert d.content == "(no output)" and d.error is None


def test_build_registry_with_the_sandbox():
    make_sandbox()  # skips where bubblewrap is not installed
    with build_registry(ToolsConfig(sandbox=SandboxConfig(memory_mb=256), timeout_s=5.0)) as reg:
        assert [s["function"]["name"] for s in reg.specs()] == ["python", "calculator"]
        assert reg.call(ToolCall("python", {"code": "print(sum(range(101)))"})).content == "5050\n"


def test_docs_key_table_is_current():
    from pathlib import Path

    from alignkit.config import describe_fields

    rows = [f"| `{key}` | {f'`{default}`' if default else ''} | {' '.join(desc.split())} |"
            for key, default, desc in describe_fields(ToolsConfig)]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "tools.md").read_text()
    assert "\n".join(rows) in doc, "docs/tools.md's `tools` keys table is stale: regenerate it from describe_fields(ToolsConfig)"
