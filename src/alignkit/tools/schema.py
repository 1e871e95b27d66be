"""The JSON Schema subset of OpenAI function parameters: check a tool's schema once, then each call's arguments.

Supported keywords: ``type`` (a name or a list of names), ``properties``, ``required``,
``additionalProperties`` (a boolean), ``items``, ``enum``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``minItems``/``maxItems``, plus the annotations ``description``, ``title``,
``default`` and ``examples``. A schema that uses any other keyword is refused when the tool is
registered, so no constraint is ever silently ignored.
"""

from __future__ import annotations

from typing import Any

from alignkit.errors import ConfigError

_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
_CHECKED = {"type", "properties", "required", "additionalProperties", "items", "enum", "minimum", "maximum",
            "minLength", "maxLength", "minItems", "maxItems"}
_ANNOTATIONS = {"description", "title", "default", "examples"}


def check_schema(schema: Any, where: str = "parameters") -> None:
    """Raise :class:`ConfigError` naming the path of the first unsupported or malformed part."""
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: a JSON schema must be an object, got {type(schema).__name__}")
    unknown = sorted(set(schema) - _CHECKED - _ANNOTATIONS)
    if unknown:
        raise ConfigError(f"{where}: unsupported JSON-schema keyword(s) {unknown}; supported: {sorted(_CHECKED)}")
    types = _types(schema)
    if not set(types) <= _TYPES:
        raise ConfigError(f"{where}.type: {schema.get('type')!r}; expected one or a list of {sorted(_TYPES)}")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise ConfigError(f"{where}.properties: must be an object")
    for name, sub in props.items():
        check_schema(sub, f"{where}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ConfigError(f"{where}.required: must be a list of property names")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        raise ConfigError(f"{where}.additionalProperties: only true/false is supported")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ConfigError(f"{where}.enum: must be a list")


def validate(value: Any, schema: dict, where: str = "arguments") -> list[str]:
    """Every way ``value`` breaks ``schema`` (checked by :func:`check_schema`), as ``path: problem`` lines."""
    types = _types(schema)
    if types and not any(_is_type(value, t) for t in types):
        return [f"{where}: expected {' or '.join(types)}, got {_json_type(value)} {_short(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {_short(value)} is not one of {schema['enum']}"]
    problems = _bounds(value, schema, where)
    if isinstance(value, dict):
        problems += _object_problems(value, schema, where)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += validate(item, schema["items"], f"{where}[{i}]")
    return problems


def _object_problems(value: dict, schema: dict, where: str) -> list[str]:
    props = schema.get("properties", {})
    problems = [f"{where}.{name}: required property missing" for name in schema.get("required", [])
                if name not in value]
    for name, item in value.items():
        if name in props:
            problems += validate(item, props[name], f"{where}.{name}")
        elif schema.get("additionalProperties") is False:
            problems.append(f"{where}.{name}: unexpected property (allowed: {sorted(props)})")
    return problems


def _bounds(value: Any, schema: dict, where: str) -> list[str]:
    if isinstance(value, str):
        size, what, lo, hi = len(value), "length", schema.get("minLength"), schema.get("maxLength")
    elif isinstance(value, list):
        size, what, lo, hi = len(value), "item count", schema.get("minItems"), schema.get("maxItems")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        size, what, lo, hi = value, "value", schema.get("minimum"), schema.get("maximum")
    else:
        return []
    if lo is not None and size < lo:
        return [f"{where}: {what} {size} is below the minimum {lo}"]
    if hi is not None and size > hi:
        return [f"{where}: {what} {size} is above the maximum {hi}"]
    return []


def _types(schema: dict) -> list[str]:
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return _json_type(value) == name


def _json_type(value: Any) -> str:
    for t, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
                    (dict, "object"), (type(None), "null")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
