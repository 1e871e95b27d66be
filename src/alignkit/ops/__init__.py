"""Numerics shared by all recipes: response-token log-probs with a chunked lm-head (``logprobs``)."""

from alignkit.ops.logprobs import (
    ResponseLogps,
    TokenLogps,
    UnsupportedModelError,
    response_logps,
    response_token_logps,
)

__all__ = ["ResponseLogps", "TokenLogps", "UnsupportedModelError", "response_logps", "response_token_logps"]
