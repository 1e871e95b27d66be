"""The tool protocol: a tool is a name, an OpenAI function schema and a callable.

:class:`ToolRegistry` parses a model's call (JSON arguments), validates it against the tool's schema,
runs it with a per-call timeout, and turns every failure -- unknown tool, malformed JSON, invalid
arguments, an exception, a timeout -- into the observation the model sees, never an exception.
:meth:`ToolRegistry.submit` returns a future, so an engine can run the calls of a whole batch in
parallel while other rows keep decoding; :meth:`ToolRegistry.call_many` waits for a list of them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from alignkit.config import StrictModel, import_object
from alignkit.errors import ConfigError
from alignkit.tools.calculator import CalculatorError, calculator
from alignkit.tools.sandbox import PythonSandbox, SandboxConfig
from alignkit.tools.schema import check_schema, validate

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


@dataclass(frozen=True)
class ToolCall:
    """One call as the model wrote it: ``arguments`` is the JSON text (or an already parsed object)."""

    name: str
    arguments: str | dict
    id: str = ""


@dataclass(frozen=True)
class ToolOutput:
    """What a tool's function returns: the observation text and, when the tool failed, a short error."""

    content: str
    error: str | None = None


@dataclass(frozen=True)
class ToolResult:
    """The observation for one call. ``error`` is None when the tool ran and returned normally."""

    call_id: str
    name: str
    content: str
    error: str | None
    seconds: float


@dataclass(frozen=True)
class Tool:
    """A callable the model may use. ``run(arguments, timeout_s)`` gets validated arguments and must return
    within about ``timeout_s`` (the registry never waits longer on its behalf)."""

    name: str
    description: str
    parameters: dict
    run: Callable[[dict, float], ToolOutput] = field(repr=False)

    def __post_init__(self):
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"tool name {self.name!r}: use 1-64 letters, digits, '_' or '-'")
        check_schema(self.parameters, f"tool {self.name}: parameters")
        if self.parameters.get("type") != "object":
            raise ConfigError(f"tool {self.name}: parameters must be a JSON schema with type 'object'")

    def spec(self) -> dict:
        """The tool in the OpenAI function-calling format (the ``tools`` list of a request or a data row)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def function_tool(name: str, description: str, parameters: dict, fn: Callable[..., Any]) -> Tool:
    """A tool that calls ``fn(**arguments)`` in this process. A string result is the observation; anything
    else is shown as JSON. ``fn`` is trusted code: on timeout the model is told so, but ``fn`` keeps running
    in its (daemon) thread because Python cannot stop a thread."""

    def run(arguments: dict, timeout_s: float) -> ToolOutput:
        box: dict[str, ToolOutput] = {}
        worker = threading.Thread(target=lambda: box.update(out=_apply(fn, arguments)), daemon=True)
        worker.start()
        worker.join(timeout_s)
        if "out" not in box:
            return ToolOutput(f"error: {name} timed out after {timeout_s:g} s", f"timed out after {timeout_s:g} s")
        return box["out"]

    return Tool(name, description, parameters, run)


def _apply(fn: Callable[..., Any], arguments: dict) -> ToolOutput:
    try:
        value = fn(**arguments)
    except Exception as exc:  # the tool's failure is the model's observation
        error = f"{type(exc).__name__}: {exc}"
        return ToolOutput(f"error: {error}", error)
    if isinstance(value, str):
        return ToolOutput(value)
    try:
        return ToolOutput(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return ToolOutput(str(value))


# ------------------------------------------------------------------------------------- built-ins
CALCULATOR_PARAMETERS = {
    "type": "object",
    "properties": {"expression": {"type": "string", "description": "e.g. (3 + 4.5) * 2 ** 3 or sqrt(2) / 7"}},
    "required": ["expression"],
    "additionalProperties": False,
}
PYTHON_PARAMETERS = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "A Python 3 program; print what you need to see."}},
    "required": ["code"],
    "additionalProperties": False,
}


def calculator_tool() -> Tool:
    """Arithmetic on numbers and operators (:mod:`alignkit.tools.calculator`)."""

    def run(arguments: dict, timeout_s: float) -> ToolOutput:
        try:
            return ToolOutput(calculator(arguments["expression"]))
        except CalculatorError as exc:
            return ToolOutput(f"error: {exc}", str(exc))

    return Tool("calculator", "Evaluate an arithmetic expression (numbers, + - * / // % **, sqrt, log, sin, ...).",
                CALCULATOR_PARAMETERS, run)


def python_tool(sandbox: PythonSandbox) -> Tool:
    """Runs the code in ``sandbox``; the observation is stdout, then stderr and the error when there are any."""

    def run(arguments: dict, timeout_s: float) -> ToolOutput:
        result = sandbox.run(arguments["code"], timeout_s)
        parts = [result.stdout] if result.stdout else []
        if result.stderr:
            parts.append(f"[stderr]\n{result.stderr}")
        if result.error:
            parts.append(f"[error] {result.error}")
        return ToolOutput("\n".join(parts) if parts else "(no output)", result.error)

    return Tool("python", "Run a Python 3 program in a sandbox (standard library only, no network, no files "
                "kept between calls) and see what it prints.", PYTHON_PARAMETERS, run)


# -------------------------------------------------------------------------------------- config
class UserToolConfig(StrictModel):
    """A user-defined tool: a Python function and the JSON schema of its keyword arguments."""

    function: str
    """'package.module:function', called as function(**arguments); returns a string or a JSON-able value."""
    name: str | None = None
    """The name the model calls; None: the function's own name."""
    description: str = ""
    """What the tool does, shown to the model."""
    parameters: dict[str, Any]
    """JSON schema (type: object) of the arguments, in the OpenAI function format."""


class ToolsConfig(StrictModel):
    """The tools a model may call and how they run."""

    builtin: list[Literal["python", "calculator"]] = ["python", "calculator"]
    """Built-in tools to offer: 'python' (sandboxed interpreter) and 'calculator' (safe arithmetic)."""
    user: list[UserToolConfig] = []
    """User-defined tools ('package.module:function' plus schema)."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """Limits of the python tool's sandbox."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Wall-time limit of one tool call, seconds (the python tool kills the sandbox at this point)."""
    max_parallel: int = Field(default=8, ge=1)
    """Tool calls run at the same time (threads; each python call is its own sandboxed process)."""
    max_observation_chars: int = Field(default=4000, ge=100)
    """Longest observation shown to the model; longer ones keep their head and tail around a marker."""


def load_function(spec: str, where: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (:func:`alignkit.config.import_object`); it must be callable."""
    fn = import_object(spec, where)
    if not callable(fn):
        raise ConfigError(f"{where}={spec!r}: not callable")
    return fn


def build_registry(cfg: ToolsConfig) -> ToolRegistry:
    """The registry of ``cfg``; starting the python tool checks the sandbox works (or refuses)."""
    tools = []
    if "python" in cfg.builtin:
        tools.append(python_tool(PythonSandbox(cfg.sandbox)))
    if "calculator" in cfg.builtin:
        tools.append(calculator_tool())
    for i, u in enumerate(cfg.user):
        fn = load_function(u.function, f"tools.user[{i}].function")
        tools.append(function_tool(u.name or fn.__name__, u.description, u.parameters, fn))
    return ToolRegistry(tools, timeout_s=cfg.timeout_s, max_parallel=cfg.max_parallel,
                        max_observation_chars=cfg.max_observation_chars)


# ------------------------------------------------------------------------------------ registry
class ToolRegistry:
    """Named tools plus the rules for calling them. Use as a context manager (or call :meth:`close`)."""

    def __init__(self, tools: Sequence[Tool], timeout_s: float = 10.0, max_parallel: int = 8,
                 max_observation_chars: int = 4000):
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ConfigError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool
        self.timeout_s = timeout_s
        self.max_observation_chars = max_observation_chars
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="alignkit-tool")

    def specs(self) -> list[dict]:
        """The ``tools`` list to show the model (OpenAI function format)."""
        return [t.spec() for t in self.tools.values()]

    def submit(self, call: ToolCall, timeout_s: float | None = None) -> Future[ToolResult]:
        """Start ``call`` in the registry's thread pool; the future's result is its :class:`ToolResult`."""
        return self._pool.submit(self.call, call, timeout_s)

    def call_many(self, calls: Sequence[ToolCall], timeout_s: float | None = None) -> list[ToolResult]:
        """Run ``calls`` in parallel (``max_parallel`` at a time); results in the order of ``calls``."""
        return [f.result() for f in [self.submit(c, timeout_s) for c in calls]]

    def call(self, call: ToolCall, timeout_s: float | None = None) -> ToolResult:
        """Parse, validate and run one call in this thread; every failure is an observation."""
        start = time.monotonic()
        tool, arguments, problem = self._parse(call)
        if problem is not None:
            out = ToolOutput(f"error: {problem}", problem)
        else:
            assert tool is not None and arguments is not None
            out = tool.run(arguments, self.timeout_s if timeout_s is None else timeout_s)
        content = truncate_middle(out.content, self.max_observation_chars)
        return ToolResult(call.id, call.name, content, out.error, time.monotonic() - start)

    def _parse(self, call: ToolCall) -> tuple[Tool | None, dict | None, str | None]:
        tool = self.tools.get(call.name)
        if tool is None:
            return None, None, f"unknown tool {call.name!r}; available: {sorted(self.tools)}"
        arguments: Any = call.arguments
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return tool, None, f"arguments of {call.name} are not valid JSON ({exc})"
        if not isinstance(arguments, dict):
            return tool, None, f"arguments of {call.name} must be a JSON object, got {type(arguments).__name__}"
        problems = validate(arguments, tool.parameters)
        if problems:
            return tool, None, f"invalid arguments for {call.name}: " + "; ".join(problems)
        return tool, arguments, None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ToolRegistry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def truncate_middle(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a marker saying how much
    was cut (the end of a traceback matters as much as the start of the output)."""
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 0)  # 40: room for the marker
    marker = f"\n...[{len(text) - keep} characters cut]...\n"
    return text[: keep - keep // 2] + marker + text[len(text) - keep // 2:]
