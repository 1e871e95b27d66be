"""Comparable-score signatures: what must be equal for two reported numbers to be comparable.

A :class:`Signature` is a mapping of named components to plain data. Components split in two:

- **setting** components (metric, task, chat policy, truncation, decoding, dataset, protocol):
  these must be equal for two numbers to be compared; any difference changes the number for
  reasons other than the model;
- **subject** components (model, tokenizer, chat template): they identify *what* was evaluated;
  they differ when you compare two models, which is the point of comparing.

``sha256`` hashes every component (it changes when anything changes, and only then);
``setting_sha256`` hashes the setting components only (equal means comparable). The short form
is for humans, in the spirit of sacreBLEU signatures, e.g.
``qa_f1_score.v1|task:hotpotqa#1f2e3d4c|chat:on|in:7500/middle|dec:greedy/32|data:200#9a8b7c6d|proto:longbench-v1|model:smollm2-135m-instruct#0a1b2c3d``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignkit.fingerprints import canonical_dumps, sha256_hex

SETTING_COMPONENTS = (
    "metric",
    "task",
    "chat_policy",
    "truncation",
    "decoding",
    "dataset",
    "protocol",
    "aggregate",
)
SUBJECT_COMPONENTS = ("model", "tokenizer", "chat_template")
KNOWN_COMPONENTS = SETTING_COMPONENTS + SUBJECT_COMPONENTS


@dataclass(frozen=True)
class Signature:
    """Named components (plain JSON data) describing how one number was produced."""

    components: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.components) - set(KNOWN_COMPONENTS)
        if unknown:
            raise ValueError(
                f"unknown signature components {sorted(unknown)}; known: {list(KNOWN_COMPONENTS)}"
            )
        canonical_dumps(self.components)  # fail early on non-JSON data

    @property
    def sha256(self) -> str:
        return sha256_hex(self.components)

    @property
    def setting_sha256(self) -> str:
        return sha256_hex({k: v for k, v in self.components.items() if k in SETTING_COMPONENTS})

    def short(self) -> str:
        c = self.components
        parts: list[str] = []
        if "metric" in c:
            parts.append(f"{c['metric']['name']}.v{c['metric']['version']}")
        if "aggregate" in c:
            a = c["aggregate"]
            parts.append(f"agg:{a['kind']}[{len(a['members'])}]#{sha256_hex(a['members'])[:8]}")
        if "task" in c:
            parts.append(f"task:{c['task']['name']}#{sha256_hex(c['task'])[:8]}")
        if "chat_policy" in c:
            parts.append("chat:on" if c["chat_policy"]["apply_chat_template"] else "chat:off")
        if "truncation" in c:
            t = c["truncation"]
            parts.append(f"in:{t['max_input_tokens']}/{t['side']}")
        if "decoding" in c:
            d = c["decoding"]
            parts.append(f"dec:{d['strategy']}/{d['max_new_tokens']}#{sha256_hex(d)[:6]}")
        if "dataset" in c:
            parts.append(f"data:{c['dataset']['n']}#{c['dataset']['sha256'][:8]}")
        if "protocol" in c:
            parts.append(f"proto:{c['protocol']['name']}")
        if "model" in c:
            parts.append(f"model:{c['model']['name']}#{c['model']['sha256'][:8]}")
        if "tokenizer" in c:
            parts.append(f"tok#{c['tokenizer']['sha256'][:8]}")
        if c.get("chat_template", {}).get("sha256"):
            parts.append(f"tpl#{c['chat_template']['sha256'][:8]}")
        return "|".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "short": self.short(),
            "sha256": self.sha256,
            "setting_sha256": self.setting_sha256,
            "components": self.components,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        sig = cls(dict(data["components"]))
        if data.get("sha256") and data["sha256"] != sig.sha256:
            raise ValueError(
                f"signature hash mismatch: stored {data['sha256'][:12]}, recomputed {sig.sha256[:12]} "
                f"(the results file was edited or written by an incompatible version)"
            )
        return sig


def differing_components(
    a: Signature, b: Signature, which: tuple[str, ...] = SETTING_COMPONENTS
) -> list[str]:
    """Names of the components (among ``which``) whose values differ between two signatures."""
    names = [n for n in which if n in a.components or n in b.components]
    return [n for n in names if canonical_dumps(a.components.get(n)) != canonical_dumps(b.components.get(n))]


def describe_difference(a: Signature, b: Signature, component: str) -> str:
    """One line saying how a component differs, naming the changed keys."""
    va, vb = a.components.get(component), b.components.get(component)
    if not isinstance(va, dict) or not isinstance(vb, dict):
        return f"{component}: {_brief(va)} vs {_brief(vb)}"
    keys = sorted(k for k in set(va) | set(vb) if canonical_dumps(va.get(k)) != canonical_dumps(vb.get(k)))
    shown = ", ".join(f"{k}={_brief(va.get(k))} vs {_brief(vb.get(k))}" for k in keys)
    return f"{component}: {shown}"


def _brief(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(ch in "0123456789abcdef" for ch in v):
        return v[:8]
    if isinstance(v, (dict, list)):
        return "#" + sha256_hex(v)[:8]
    return repr(v)


def aggregate_signature(
    kind: str, members: dict[str, Signature], subject: Signature | None = None
) -> Signature:
    """Signature of an average: the member names with their setting hashes, plus the subject.

    Two averages are comparable when they average the same members under the same settings.
    """
    comps: dict[str, Any] = {
        "aggregate": {
            "kind": kind,
            "members": {name: s.setting_sha256 for name, s in sorted(members.items())},
        }
    }
    if subject is not None:
        comps.update({k: v for k, v in subject.components.items() if k in ("model", "tokenizer")})
    return Signature(comps)
