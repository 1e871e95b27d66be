"""Tools a model can call (GLM-4 All Tools, METHODS.md 12.4): the protocol and registry
(:mod:`~alignkit.tools.registry`), the sandboxed ``python`` tool (:mod:`~alignkit.tools.sandbox`), the
``calculator`` (:mod:`~alignkit.tools.calculator`) and the argument schemas (:mod:`~alignkit.tools.schema`).
docs/tools.md is the guide, with the sandbox's threat model."""

from alignkit.tools.calculator import CalculatorError, calculate
from alignkit.tools.registry import (
    Tool,
    ToolCall,
    ToolOutput,
    ToolRegistry,
    ToolResult,
    ToolsConfig,
    UserToolConfig,
    build_registry,
    calculator_tool,
    function_tool,
    python_tool,
)
from alignkit.tools.sandbox import PythonSandbox, SandboxConfig, SandboxResult, SandboxUnavailable

__all__ = [
    "CalculatorError", "PythonSandbox", "SandboxConfig", "SandboxResult", "SandboxUnavailable", "Tool",
    "ToolCall", "ToolOutput", "ToolRegistry", "ToolResult", "ToolsConfig", "UserToolConfig", "build_registry",
    "calculate", "calculator_tool", "function_tool", "python_tool",
]
