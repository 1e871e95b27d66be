"""The one reader of row files, and the one chat-message validator.

Every command that reads rows (training data, prompts to generate from, responses to judge or
annotate, evaluation data) reads them here, so every bad input is reported the same way: a
:class:`~alignkit.errors.DataError` whose message starts with where the problem is —
``file:line`` for JSONL (and record number for JSON arrays and Parquet), ``dir[row n]`` for a
saved Hugging Face dataset — then ``field 'x': what is wrong``.

Formats: JSONL (``.jsonl``/``.ndjson``, read line by line: a file of any size streams), JSON (an
array of rows), Parquet and ``datasets.save_to_disk`` directories (the ``train`` split of a
DatasetDict).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from alignkit.errors import DataError

Messages = list[dict[str, Any]]
Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)


class FunctionCall(BaseModel):
    """The function an assistant's tool call invokes: its name and its arguments as a JSON-object string."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v: str) -> str:
        try:
            value = json.loads(v)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(value, dict):
            raise ValueError(f"must be a JSON object, got {type(value).__name__}")
        return v


class ToolCall(BaseModel):
    """One call in an assistant message's ``tool_calls`` (OpenAI format)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One chat message: the one message validator, used by the row reader (:func:`check_messages`),
    the chat server's and the reward server's request models.

    ``{role, content}``, plus OpenAI's tool fields: an assistant message may carry ``tool_calls`` (its
    ``content`` may then be null or absent), a ``tool`` message names the call it answers in
    ``tool_call_id``. Other keys (OpenAI's ``name``, ...) are ignored; the role is one of :data:`ROLES`.
    Which calls and functions exist is a property of the whole conversation: :func:`check_tool_use`.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise PydanticCustomError("missing", "Field required", {"field": "content"})
        if self.tool_calls is not None and self.role != "assistant":
            raise PydanticCustomError("role_field", "only assistant messages carry tool_calls",
                                      {"field": "tool_calls"})
        if self.tool_call_id is not None and self.role != "tool":
            raise PydanticCustomError("role_field", "only tool messages carry a tool_call_id",
                                      {"field": "tool_call_id"})
        return self

    def canonical(self) -> dict[str, Any]:
        """``{role, content}`` (content ``""`` when null), plus ``tool_calls`` / ``tool_call_id`` when present."""
        out: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class FunctionSpec(BaseModel):
    """A declared function: name, description and a JSON schema of its parameters (OpenAI format)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    """One entry of a ``tools`` list: ``{"type": "function", "function": {...}}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: FunctionSpec


class Record(NamedTuple):
    """One row: ``where`` (``file:line``, or ``dir[row n]``) prefixes any error about it."""

    where: str
    line: int  # 1-based line (JSONL) or record number (JSON array, Parquet, dataset)
    value: Any


def _iter_jsonl(path: Path) -> Iterator[Record]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
            if not text.strip():
                continue
            try:
                yield Record(where, lineno, json.loads(text))
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None


def _iter_dataset_dir(path: Path) -> Iterator[Record]:
    from datasets import load_from_disk

    ds = load_from_disk(str(path))
    if hasattr(ds, "keys"):  # DatasetDict: take the train split
        if "train" not in ds:
            raise DataError(f"{path}: dataset dict has no 'train' split (splits: {list(ds.keys())})")
        ds = ds["train"]
    for i, rec in enumerate(ds):
        yield Record(f"{path}[row {i + 1}]", i + 1, rec)


def iter_records(path: str | Path) -> Iterator[Record]:
    """Yield a :class:`Record` for every row of ``path``, streaming (JSONL is read line by line)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        yield from _iter_dataset_dir(path)
        return
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(path)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json data file must hold an array of rows")
        for i, rec in enumerate(data):
            yield Record(f"{path}:{i + 1}", i + 1, rec)  # the 1-based record number for JSON arrays
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(path).to_pylist()):
            yield Record(f"{path}:{i + 1}", i + 1, rec)
    else:
        raise DataError(
            f"{path}: unsupported data format {suffix!r} (use .jsonl, .json, .parquet or a saved dataset dir)"
        )


def iter_objects(path: str | Path, allow_empty: bool = False) -> Iterator[Record]:
    """:func:`iter_records`, each record a JSON object; a file without rows is an error unless
    ``allow_empty`` (for files a program wrote itself, where no rows is a valid outcome)."""
    n = 0
    for rec in iter_records(path):
        if not isinstance(rec.value, dict):
            raise DataError(f"{rec.where}: expected a JSON object, got {type(rec.value).__name__}")
        n += 1
        yield rec
    if n == 0 and not allow_empty:
        raise DataError(f"{path}: no rows")


def read_objects(path: str | Path, allow_empty: bool = False) -> list[Record]:
    """Every row of ``path`` (each an object); any bad row raises before anything is returned."""
    return list(iter_objects(path, allow_empty))


def require(row: dict[str, Any], key: str, where: str) -> Any:
    """``row[key]``, or ``field 'key': missing``."""
    if key not in row:
        raise DataError(f"{where}: field '{key}': missing")
    return row[key]


def require_type(row: dict[str, Any], key: str, where: str, typ: type | tuple[type, ...], what: str) -> Any:
    """``row[key]`` of type ``typ``, or ``field 'key': expected <what>, got <type>`` (``what``: "a list")."""
    value = require(row, key, where)
    if not isinstance(value, typ):
        raise DataError(f"{where}: field '{key}': expected {what}, got {type(value).__name__}")
    return value


def require_str(row: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    """A string field (non-blank unless ``allow_empty``)."""
    value = require_type(row, key, where, str, "a string")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field '{key}': empty")
    return value


def check_messages(value: Any, where: str, name: str) -> Messages:
    """A non-empty list of :class:`ChatMessage` s, in canonical form (:meth:`ChatMessage.canonical`); the
    first problem raises ``where: field 'name[j].key': what is wrong``."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{name}': expected a non-empty list of messages")
    out = []
    for j, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: field '{name}[{j}]': expected an object with 'role' and 'content'")
        try:
            out.append(ChatMessage.model_validate(msg).canonical())
        except ValidationError as exc:
            raise DataError(f"{where}: field '{name}[{j}].{_message_problem(exc, msg)}") from None
    return out


def _message_problem(exc: ValidationError, msg: dict[str, Any]) -> str:
    """``key': what is wrong`` for the first error of a :class:`ChatMessage` validation."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]] or [str((err.get("ctx") or {}).get("field", "role"))]
    key = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc)[1:]
    if err["type"] == "missing":
        return f"{key}': missing"
    if key == "role" and isinstance(msg.get("role"), str):
        return f"role': unknown role {msg['role']!r} (expected one of {', '.join(ROLES)})"
    if key != "role" and err["type"] in ("value_error", "role_field", "string_too_short", "literal_error",
                                         "extra_forbidden"):
        return f"{key}': {err['msg'].removeprefix('Value error, ')}"
    got = msg.get(loc[0]) if len(loc) == 1 else err.get("input")
    what = "a list" if err["type"] == "list_type" else "an object" if err["type"] == "model_type" else "a string"
    return f"{key}': expected {what}, got {type(got).__name__}"


def check_tools(value: Any, where: str, name: str = "tools") -> list[dict[str, Any]]:
    """A row's ``tools``: a non-empty list of :class:`ToolSpec` with distinct names, as plain dicts."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{name}': expected a non-empty list of tools")
    out: list[dict[str, Any]] = []
    for j, spec in enumerate(value):
        try:
            tool = ToolSpec.model_validate(spec).model_dump(exclude_none=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            raise DataError(f"{where}: field '{name}[{j}]{path}': {err['msg'].removeprefix('Value error, ')}") from None
        if any(t["function"]["name"] == tool["function"]["name"] for t in out):
            raise DataError(f"{where}: field '{name}[{j}].function.name': "
                            f"function {tool['function']['name']!r} is declared twice")
        out.append(tool)
    return out


def check_tool_use(messages: Messages, tools: list[dict[str, Any]] | None, where: str, name: str | list[str]) -> None:
    """The calls of a (validated) conversation fit together: every call names a declared function and has
    an id not used before, and every ``tool`` message answers an earlier call by its ``tool_call_id``.

    ``name``: the field holding the messages (message ``j`` is ``name[j]``), or each message's field."""
    fields = name if isinstance(name, list) else [f"{name}[{j}]" for j in range(len(messages))]
    declared = {t["function"]["name"] for t in tools or []}
    calls: set[str] = set()
    for j, msg in enumerate(messages):
        for k, call in enumerate(msg.get("tool_calls") or []):
            field = f"{fields[j]}.tool_calls[{k}]"
            if call["function"]["name"] not in declared:
                known = ", ".join(sorted(declared)) or "none: the row has no 'tools'"
                raise DataError(f"{where}: field '{field}.function.name': undeclared function "
                                f"{call['function']['name']!r} (declared: {known})")
            if call["id"] in calls:
                raise DataError(f"{where}: field '{field}.id': call id {call['id']!r} is used twice")
            calls.add(call["id"])
        if msg["role"] == "tool" and (calls or "tool_call_id" in msg):
            # a tool turn in a conversation with calls must answer one of them; old rows without any
            # calls keep their bare tool turns
            answered = msg.get("tool_call_id")
            if answered is None:
                raise DataError(f"{where}: field '{fields[j]}.tool_call_id': missing")
            if answered not in calls:
                raise DataError(f"{where}: field '{fields[j]}.tool_call_id': {answered!r} matches no earlier "
                                "tool call")


def check_prompt(value: Any, where: str, name: str = "prompt") -> str | Messages:
    """A prompt: a non-blank string or a non-empty list of chat messages."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field '{name}': empty prompt")
        return value
    return check_text(value, where, name)


def check_text(value: Any, where: str, name: str) -> str | Messages:
    """A text field: a plain string or a list of chat messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return check_messages(value, where, name)
    raise DataError(f"{where}: field '{name}': expected a string or a list of messages, got {type(value).__name__}")
