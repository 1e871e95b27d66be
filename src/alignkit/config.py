"""Strict configuration: typed models, YAML with duplicate-key detection, dotted overrides.

Every recipe config is a :class:`StrictModel`. Unknown keys, duplicate YAML keys and wrong
types are errors at load time (never a silent default). ``load_config`` is the one entry
point: ``load_config(DPOConfig, "recipe.yaml", ["train.lr=1e-6", "loss.beta=0.2"])``.

Also here, because every config uses them: :class:`Renamed`, the one way an old key spelling keeps
working, and :data:`Precision`, the one type of every precision/dtype field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from alignkit.errors import ConfigError  # noqa: F401  (re-exported: config errors are raised here)

OLD_PRECISION_SPELLINGS = {"float32": "fp32", "bfloat16": "bf16"}
"""Declared aliases: the torch dtype names that inference ``dtype`` fields used to take."""
Precision = Annotated[Literal["auto", "fp32", "bf16", "float32", "bfloat16"],
                      AfterValidator(lambda v: OLD_PRECISION_SPELLINGS.get(v, v))]
"""The one precision type of every config: training ``precision`` and inference ``dtype`` fields alike.
``auto`` resolves by capability (:func:`alignkit.precision.resolve_precision`); ``float32``/``bfloat16``
are read as ``fp32``/``bf16``. fp16 is not offered (training in it needs loss scaling, which alignkit
does not do; the vLLM rollout engine's own ``rollout.vllm_dtype`` still takes float16)."""


@dataclass(frozen=True)
class Renamed:
    """The old spelling of a key, declared on the model that owns the key (``renamed = {"out":
    Renamed("output_dir")}``): it keeps loading, means the same as the new key, is listed in ``--help``
    and the docs' config tables, and giving both spellings at once is an error.

    ``values`` maps old values to new ones where the meaning moved with the name (``tensorboard: true``
    -> ``report_to: [tensorboard]``); any other old value is refused.
    """

    new: str
    values: tuple[tuple[Any, Any], ...] | None = None

    def convert(self, old: str, value: Any) -> Any:
        if self.values is None:
            return value
        for before, after in self.values:
            if type(before) is type(value) and before == value:
                return after
        allowed = ", ".join(json.dumps(b) for b, _ in self.values)
        raise ValueError(f"'{old}' (the old spelling of '{self.new}'): expected one of {allowed}, got {value!r}")

    def describe(self, prefix: str, old: str) -> str:
        if self.values is None:
            return f"Old spelling of ``{prefix}{self.new}`` (still read; give one of the two, not both)."
        pairs = "; ".join(f"``{old}: {json.dumps(b)}`` = ``{self.new}: {json.dumps(a)}``" for b, a in self.values)
        return f"Old spelling of ``{prefix}{self.new}`` (still read; not together with it): {pairs}."


class StrictModel(BaseModel):
    """Base for every config section: unknown keys and type mismatches are rejected.

    A model may declare ``renamed`` (old key -> :class:`Renamed` or the new key's name): the one way
    an old spelling keeps working (see :class:`Renamed`).

    A model used as a command's config (see :mod:`alignkit.commands`) may declare, as class
    attributes: ``cli_aliases`` (extra flag spellings -> dotted key, e.g. ``{"--in": "input"}``),
    ``cli_positional`` (fields given as positional arguments, in order) and ``cli_whole`` (list
    fields whose flag value is one item, repeatable, never split on commas).
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, use_attribute_docstrings=True)
    renamed: ClassVar[dict[str, Renamed | str]] = {}
    cli_aliases: ClassVar[dict[str, str]] = {}
    cli_positional: ClassVar[tuple[str, ...]] = ()
    cli_whole: ClassVar[tuple[str, ...]] = ()
    cli_variadic: ClassVar[tuple[str, ...]] = ()  # list fields whose flag takes several values at once

    @classmethod
    def renamings(cls) -> dict[str, Renamed]:
        """``renamed`` with every entry as a :class:`Renamed`."""
        return {old: r if isinstance(r, Renamed) else Renamed(r) for old, r in cls.renamed.items()}

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data: Any) -> Any:
        if not cls.renamed or not isinstance(data, dict):
            return data
        data = dict(data)
        for old, r in cls.renamings().items():
            if old not in data:
                continue
            if r.new in data:
                raise ValueError(f"'{old}' is the old spelling of '{r.new}': give one of them, not both")
            data[r.new] = r.convert(old, data.pop(old))
        return data

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for old, r in cls.renamings().items():
            if old in cls.model_fields or r.new not in cls.model_fields:
                raise TypeError(f"{cls.__name__}.renamed: {old!r} -> {r.new!r} must map an unused key to a field")


M = TypeVar("M", bound=BaseModel)

# YAML 1.1 (PyYAML) reads "1e-6" as a string; YAML 1.2 and every user read it as a float.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads 1e-6 as a float."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{key_node.start_mark.name}:{line}: duplicate key {key!r} (first defined on line {seen[key]})"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; duplicate keys raise :class:`ConfigError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(_named_stream(text, str(path)), Loader=_StrictLoader)  # noqa: S506 - strict SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse one override value with the same YAML rules as config files."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except yaml.YAMLError:
        return text


def set_dotted(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``, creating sections on the way."""
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"{what}: empty key")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{what}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides in order to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, _, raw = item.partition("=")
        set_dotted(out, key, parse_value(raw), f"override {item!r}")
    return out


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        given = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {given!r})"
        if err["type"] == "value_error":  # our own validators: their message is the whole story
            msg, shown = msg.removeprefix("Value error, "), "" if isinstance(given, dict) else shown
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def load_config(cls: type[M], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None) -> M:
    """Build ``cls`` from an optional YAML file, typed ``values`` (dotted keys, e.g. from generated
    command-line flags) and then dotted overrides; errors name file and field."""
    data = load_yaml(path) if path else {}
    for key, value in (values or {}).items():
        set_dotted(data, key, value, f"--{key}")
    data = apply_overrides(data, list(overrides))
    source = str(path) if path else "<overrides>"
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def describe_fields(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field, recursing into sub-sections."""
    import typing

    rows = []
    for name, f in cls.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        sub = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(sub) == 1 and not f.discriminator:
            section_doc = (f.description or ((sub[0].__doc__ or "").strip().splitlines() or [""])[0]).strip()
            rows.append((key, "", section_doc))
            rows.extend(describe_fields(sub[0], key + "."))
            continue
        if f.discriminator and len(sub) > 1:  # tagged union: list each variant's own fields
            for variant in sub:
                tag = variant.model_fields[f.discriminator].default
                doc = ((variant.__doc__ or "").strip().splitlines() or [""])[0]
                rows.append((f"{key}.{f.discriminator}={tag}", "", doc))
                rows.extend((k, d, desc) for k, d, desc in describe_fields(variant, key + ".")
                            if not k.endswith("." + f.discriminator))
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        if len(default) > 40:
            default = default[:37] + "..."
        rows.append((key, default, (f.description or "").strip()))
    if issubclass(cls, StrictModel):
        rows.extend((f"{prefix}{old}", "", r.describe(prefix, old)) for old, r in cls.renamings().items())
    return rows


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Save the resolved config next to outputs (YAML, keys in definition order)."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")


def _named_stream(text: str, name: str):
    import io

    stream = io.StringIO(text)
    stream.name = name  # type: ignore[attr-defined]  # PyYAML uses it in marks
    return stream


def import_object(spec: str, where: str) -> Any:
    """The object a config names as ``package.module:name`` (a user verifier, tool, reward function...);
    a :class:`ConfigError` naming the key ``where`` when the spec is malformed or cannot be imported.
    The one place such specs are resolved."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"{where}={spec!r}: expected 'package.module:name'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}={spec!r}: cannot import it ({exc})") from None
