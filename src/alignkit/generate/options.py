"""The engine options every generating command shares (model, backend, dtype, device, batch size)."""

from __future__ import annotations

from typing import Literal

from alignkit.config import Precision, StrictModel
from alignkit.models import DEFAULT_MODEL


class EngineOptions(StrictModel):
    """The model and engine that generate."""

    model: str = DEFAULT_MODEL
    """Model name or HF directory."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """auto: vLLM when installed and a GPU is present, else HF; vllm is refused without them."""
    dtype: Precision = "auto"
    """Weights precision; auto: bf16 where the hardware multiplies bf16 natively (AMX, AVX512-BF16, bf16 GPUs), else fp32
    (float32/bfloat16: old spellings of fp32/bf16)."""
    device: str | None = None
    """cpu | cuda | cuda:N (default: cpu for HF)."""
    batch_size: int = 8
    """Sequences decoded together."""


def engine_from_options(opts: EngineOptions):
    """Build the generation engine ``opts`` describes."""
    from alignkit.generate.engine import make_engine

    kw = {"dtype": opts.dtype, "batch_size": opts.batch_size}
    if opts.device is not None:
        kw["device"] = opts.device
    return make_engine(opts.model, backend=opts.backend, **kw)
