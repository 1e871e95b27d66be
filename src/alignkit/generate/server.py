"""An OpenAI-compatible chat-completions server for a local model (``alignkit serve``).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (fields ``model``, ``messages``, ``n``,
``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop``, ``seed``,
``logprobs`` / ``top_logprobs`` (up to 20), and vLLM's ``continue_final_message`` /
``add_generation_prompt`` to continue a final assistant message; the answer carries ``usage`` token
counts), ``GET /health``.

Safety (DESIGN §6): a Bearer API key when one is configured (401 otherwise, compared in constant
time), a request-body size limit enforced while the body streams in (413), strict validation
(422 for malformed fields, 400 for requests the model cannot honour, such as a prompt longer than
its context), and a loopback bind by default (the body limit and loopback check are
:mod:`alignkit.httpguard`, shared with the annotation app).

``stream: true`` answers with server-sent events in OpenAI's ``chat.completion.chunk`` format (a
role chunk, one content chunk per token, a ``finish_reason`` chunk, ``stream_options.include_usage``
honoured, ``data: [DONE]``). The completion is generated in the shared batch first and then sent
token by token: the stream format is exact, but tokens do not arrive while the model decodes.

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

from fastapi import Request  # at module level: FastAPI resolves the routes' string annotations here
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
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    batcher = BatchingQueue(engine)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(
        title="alignkit OpenAI-compatible server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.batcher = batcher
    app.state.counters = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    app.state.counters_lock = threading.Lock()
    app.state.created = int(time.time())
    app.state.model_name = model_name
    app.state.default_max_tokens = default_max_tokens
    app.middleware("http")(_bearer_auth(api_key))
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.include_router(_routes(engine.tokenizer))
    return BodyLimit(app, max_body_bytes, _respond) if max_body_bytes else app


def _bearer_auth(api_key: str | None):
    """HTTP middleware: every /v1/ request needs ``Authorization: Bearer <api_key>`` (when one is set)."""

    async def check(request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                return _error(401, "invalid or missing API key", "authentication_error")
        return await call_next(request)

    return check


async def _invalid_request(_request, exc):
    """422 in OpenAI's error format, naming the first invalid field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return _error(422, f"{loc}: {first.get('msg', 'invalid')}", param=loc or None)


def _routes(tokenizer):
    from fastapi import APIRouter
    from fastapi.responses import StreamingResponse

    router = APIRouter()

    @router.get("/health")
    def health(request: Request) -> dict[str, Any]:
        return {"status": "ok", "model": request.app.state.model_name, **request.app.state.counters}

    @router.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        state = request.app.state
        return {"object": "list", "data": [
            {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "alignkit"}]}

    @router.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request):
        # a sync endpoint: FastAPI runs it in a worker thread, and the batcher merges concurrent ones
        state = request.app.state
        refusal = _refusal(req, state.model_name)
        if refusal is not None:
            return refusal
        params = _sampling_params(req, state.default_max_tokens)
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        try:
            result = state.batcher.submit(messages, params)
        except GenerationError as exc:
            return _error(400, str(exc), param="messages")
        completion_tokens = sum(len(c.token_ids) for c in result.completions)
        with state.counters_lock:
            state.counters["requests"] += 1
            state.counters["prompt_tokens"] += result.prompt_tokens
            state.counters["completion_tokens"] += completion_tokens
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": result.prompt_tokens + completion_tokens}
        if req.stream:
            include_usage = bool(((req.model_extra or {}).get("stream_options") or {}).get("include_usage"))
            events = _sse_events(tokenizer, result, state.model_name, usage if include_usage else None)
            return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": state.model_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason,
                    "logprobs": _logprobs(tokenizer, c, req.top_logprobs or 0) if req.logprobs else None,
                }
                for i, c in enumerate(result.completions)
            ],
            "usage": usage,
        }

    return router


def _refusal(req: ChatRequest, model_name: str):
    """The error response for a request this server cannot honour as asked, or None."""
    if req.model != model_name:
        return _error(404, f"model {req.model!r} is not served here (available: {model_name!r})",
                      "not_found_error", "model")
    if req.stream and req.logprobs:
        return _error(400, "logprobs are not supported with stream=true", param="logprobs")
    last_is_assistant = req.messages[-1].role == "assistant"
    if req.continue_final_message and (not last_is_assistant or req.add_generation_prompt):
        return _error(400, "continue_final_message needs a final assistant message and add_generation_prompt=false",
                      param="continue_final_message")
    if last_is_assistant and not req.continue_final_message:
        # the engine would continue that message; answering with a new turn instead is not offered
        return _error(400, "a final assistant message is only supported with continue_final_message=true",
                      param="messages")
    extra = req.model_extra or {}
    for name in _UNSUPPORTED:
        if extra.get(name) not in (None, False, [], {}):
            return _error(400, f"{name!r} is not supported by this server", param=name)
    if req.max_tokens is not None and req.max_completion_tokens is not None and (
        req.max_tokens != req.max_completion_tokens
    ):
        return _error(400, "max_tokens and max_completion_tokens disagree", param="max_tokens")
    if req.top_logprobs and not req.logprobs:
        return _error(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    return None


def _sampling_params(req: ChatRequest, default_max_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        stop=[req.stop] if isinstance(req.stop, str) else list(req.stop or []),
        seed=req.seed,
        logprobs=max(req.top_logprobs or 0, 1) if req.logprobs else 0,
    )


def _sse_events(tokenizer, result, model_name: str, usage: dict | None):
    """OpenAI's ``chat.completion.chunk`` server-sent events: per choice a role chunk, one content
    chunk per generated token, a final chunk with ``finish_reason``; then usage if asked, then ``[DONE]``."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model_name}

    def event(choices: list, **extra) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra}, ensure_ascii=False)}\n\n"

    for i, c in enumerate(result.completions):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for piece in _text_pieces(tokenizer, c):
            yield event([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
        yield event([{"index": i, "delta": {}, "finish_reason": c.finish_reason}])
    if usage is not None:
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


def _text_pieces(tokenizer, completion) -> list[str]:
    """The completion's text split at token boundaries; the pieces always join to exactly ``text``
    (a token ending inside a multi-byte character waits for the next one; text cut at a stop string
    ends the split). Incremental detokenisation over a sliding window: linear in the length."""
    text, pieces, sent = completion.text, [], 0
    ids = completion.token_ids
    prefix_offset = read_offset = 0
    for i in range(len(ids)):
        before = tokenizer.decode(ids[prefix_offset:read_offset], skip_special_tokens=True)
        after = tokenizer.decode(ids[prefix_offset : i + 1], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            continue
        piece = after[len(before) :]
        prefix_offset, read_offset = read_offset, i + 1
        end = min(sent + len(piece), len(text))
        if end <= sent or text[sent:end] != piece[: end - sent]:
            break
        pieces.append(text[sent:end])
        sent = end
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces


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
