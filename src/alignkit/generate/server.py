"""An OpenAI-compatible chat-completions server for a local model (``alignkit serve``).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (fields ``model``, ``messages``, ``n``,
``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop``, ``seed``,
``logprobs`` / ``top_logprobs`` (up to 20), and vLLM's ``continue_final_message`` /
``add_generation_prompt`` to continue a final assistant message; the answer carries ``usage`` token
counts), ``GET /health``.

Safety (DESIGN §6): a Bearer API key when one is configured (401 otherwise, compared in constant
time), a request-body size limit enforced while the body streams in (413), strict validation
(422 for malformed fields, 400 for requests the model cannot honour, such as a prompt longer than
its context), and a loopback bind by default. Streaming is not offered and ``stream: true`` is
refused rather than answered non-streamed.

Concurrent requests are merged into shared engine batches by :class:`BatchingQueue`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import threading
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alignkit.generate.batcher import BatchingQueue
from alignkit.generate.engine import GenerationError, SamplingParams
from alignkit.httpguard import BodyLimit, is_loopback, send_json  # noqa: F401  (is_loopback re-exported)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request that we honour; other known-harmless
    fields are ignored, but options we cannot honour are refused (see :func:`_refuse_unsupported`)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=64)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    continue_final_message: bool = False
    """vLLM's extension: continue the final (assistant) message instead of starting a new turn."""
    add_generation_prompt: bool = True

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        if isinstance(v, list) and any(s == "" for s in v) or v == "":
            raise ValueError("stop sequences must be non-empty")
        return v


# Fields of the OpenAI API that change the answer in ways we do not implement: refused, not ignored.
_UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "response_format",
    "logit_bias",
)


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": type_, "param": param}}
    )


async def _respond(send, status: int, message: str) -> None:
    """BodyLimit's refusals in OpenAI's error format."""
    kind = "request_too_large" if status == 413 else "invalid_request_error"
    await send_json(send, status, json.dumps({"error": {"message": message, "type": kind, "param": None}}).encode())


def create_app(
    engine,
    model_name: str,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    default_max_tokens: int = 512,
):
    """Build the FastAPI app around ``engine`` (anything with the engine ``generate`` API)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    batcher = BatchingQueue(engine)
    tokenizer = engine.tokenizer

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(
        title="alignkit OpenAI-compatible server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.counters = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    lock = threading.Lock()
    created = int(time.time())

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), api_key.encode()
            ):
                return _error(401, "invalid or missing API key", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            status_code=422,
            content={
                "error": {
                    "message": f"{loc}: {first.get('msg', 'invalid')}",
                    "type": "invalid_request_error",
                    "param": loc or None,
                }
            },
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, **app.state.counters}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "alignkit"}],
        }

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        # a sync endpoint: FastAPI runs it in a worker thread, and the batcher merges concurrent ones
        if req.model != model_name:
            return _error(
                404,
                f"model {req.model!r} is not served here (available: {model_name!r})",
                "not_found_error",
                "model",
            )
        if req.stream:
            return _error(400, "stream=true is not supported by this server", param="stream")
        last_is_assistant = req.messages[-1].role == "assistant"
        if req.continue_final_message and (not last_is_assistant or req.add_generation_prompt):
            return _error(
                400,
                "continue_final_message needs a final assistant message and add_generation_prompt=false",
                param="continue_final_message",
            )
        if last_is_assistant and not req.continue_final_message:
            # the engine would continue that message; answering with a new turn instead is not offered
            return _error(
                400,
                "a final assistant message is only supported with continue_final_message=true",
                param="messages",
            )
        extra = req.model_extra or {}
        for name in _UNSUPPORTED:
            if extra.get(name) not in (None, False, [], {}):
                return _error(400, f"{name!r} is not supported by this server", param=name)
        if (
            req.max_tokens is not None
            and req.max_completion_tokens is not None
            and (req.max_tokens != req.max_completion_tokens)
        ):
            return _error(400, "max_tokens and max_completion_tokens disagree", param="max_tokens")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        params = SamplingParams(
            max_new_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            n=req.n,
            stop=stop,
            seed=req.seed,
            logprobs=max(req.top_logprobs or 0, 1) if req.logprobs else 0,
        )
        if req.top_logprobs and not req.logprobs:
            return _error(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        try:
            result = batcher.submit(messages, params)
        except GenerationError as exc:
            return _error(400, str(exc), param="messages")
        completion_tokens = sum(len(c.token_ids) for c in result.completions)
        with lock:
            counters = app.state.counters
            counters["requests"] += 1
            counters["prompt_tokens"] += result.prompt_tokens
            counters["completion_tokens"] += completion_tokens
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason,
                    "logprobs": _logprobs(tokenizer, c, req.top_logprobs or 0) if req.logprobs else None,
                }
                for i, c in enumerate(result.completions)
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": result.prompt_tokens + completion_tokens,
            },
        }

    return BodyLimit(app, max_body_bytes, _respond) if max_body_bytes else app


def _logprobs(tokenizer, completion, top: int) -> dict[str, Any]:
    """OpenAI's ``choices[].logprobs``: per generated token its log-probability and the ``top`` best."""

    def entry(token_id: int, lp: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    content = []
    for tok, step in zip(completion.token_ids, completion.logprobs or [], strict=False):
        best = sorted(step.items(), key=lambda kv: -kv[1])[:top]
        content.append({**entry(tok, step[tok]), "top_logprobs": [entry(t, lp) for t, lp in best]})
    return {"content": content}
