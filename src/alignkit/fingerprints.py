"""Content fingerprints — the one way alignkit decides "is this the same thing?": evaluation
signatures, the reference log-prob cache, pipeline stages. Canonical hashing, order-independent
dataset hashes (CoTK's ``UnorderedSha256`` idea), file hashes, and model / tokenizer /
chat-template identities. (Evaluation signatures are published: these algorithms do not change.)

- :func:`canonical_dumps` serialises plain data deterministically (dict keys sorted, sets sorted,
  tuples and lists alike), so two equal settings always hash equally.
- :class:`UnorderedSha256` is a multiset hash: SHA-256 each item and add the 32-byte digests
  byte-wise mod 256. Adding items in any order gives the same digest; adding an item twice differs
  from adding it once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alignkit.atomic import write_atomic


def canonical_dumps(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, sets sorted, tuples as lists."""
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_canonical(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}; convert it to plain data first")


def sha256_hex(obj: Any) -> str:
    """SHA-256 of :func:`canonical_dumps` (``str`` and ``bytes`` are hashed as their UTF-8 bytes)."""
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
    else:
        data = canonical_dumps(obj)
    return hashlib.sha256(data).hexdigest()


class UnorderedSha256:
    """Order-independent multiset hash: byte-wise sum mod 256 of the items' SHA-256 digests."""

    def __init__(self) -> None:
        self._acc = bytearray(32)
        self.count = 0

    def update(self, item: Any) -> None:
        digest = hashlib.sha256(item if isinstance(item, bytes) else canonical_dumps(item)).digest()
        for i, b in enumerate(digest):
            self._acc[i] = (self._acc[i] + b) & 0xFF
        self.count += 1

    def hexdigest(self) -> str:
        return bytes(self._acc).hex()


def dataset_hash(records: Iterable[dict]) -> str:
    """Order-independent hash of records (each canonicalised), salted with the record count."""
    h = UnorderedSha256()
    for r in records:
        h.update(r)
    return sha256_hex({"unordered": h.hexdigest(), "count": h.count})


def chat_template_hash(tokenizer: Any) -> str | None:
    """SHA-256 of the tokenizer's chat template (``None`` when it has none)."""
    tpl = getattr(tokenizer, "chat_template", None)
    if not tpl:
        return None
    return sha256_hex(tpl)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a tokenizer: its full serialised model (fast tokenizers) or vocab, plus specials.

    Two tokenizers with equal fingerprints split every text identically, which is what middle
    truncation and token counts depend on.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        core = json.loads(backend.to_str())
    else:
        core = sorted(tokenizer.get_vocab().items())
    specials = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    return sha256_hex({"class": type(tokenizer).__name__, "core": core, "specials": specials})


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def file_sha256(path: str | Path, cache: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file's bytes, read in blocks; ``cache`` (path -> size, mtime, hash) skips a re-read."""
    path = Path(path)
    if cache is None:
        cache = {}
    st = path.stat()
    key = str(path.resolve())
    hit = cache.get(key)
    if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
        return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
    return cache[key]["sha256"]


def _cache_path() -> Path:
    from alignkit.models import alignkit_home

    return alignkit_home() / "fingerprints.json"


def model_dir_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over a model directory's config and weight files (contents, not names or dates).

    File hashes are cached in ``$ALIGNKIT_HOME/fingerprints.json`` keyed by path, size and mtime,
    so a 15 GB checkpoint is read once, not on every evaluation.
    """
    model_dir = Path(model_dir)
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
    )
    if not files:
        raise FileNotFoundError(f"{model_dir}: no config or weight files to fingerprint")
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entries = [(str(p.relative_to(model_dir)), file_sha256(p, cache)) for p in files]
    try:
        write_atomic(cache_file, json.dumps(cache))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return sha256_hex(entries)


def module_fingerprint(model: Any) -> str:
    """SHA-256 over an in-memory model's state dict (names, dtypes, shapes, bytes)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
