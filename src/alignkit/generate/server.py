"""An OpenAI-compatible chat-completions server for a local model (``alignkit serve``).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (fields ``model``, ``messages``, ``n``,
``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop``, ``seed``,
``logprobs`` / ``top_logprobs`` (up to 20), and vLLM's ``continue_final_message`` /
``add_generation_prompt`` to continue a final assistant message; the answer carries ``usage`` token
counts), ``GET /health``.

Tools: ``tools`` (OpenAI function declarations) and ``tool_choice`` (``auto``, the default with tools;
``none``; ``required``; or ``{"type": "function", "function": {"name": ...}}``). The conversation is
rendered by the renderer training uses (:func:`~alignkit.data.toolcalls.render_chat`), the reply is
parsed back (:class:`~alignkit.data.toolcalls.ToolCallParser`) into ``message.tool_calls`` with
``finish_reason: "tool_calls"``, and streamed as ``delta.tool_calls`` chunks (each call whole, once its
``</tool_call>`` is decoded). ``required`` and a named function force the opening of the call in the
default format (``<tool_call>`` / ``<tool_call>{"name": "f", "arguments":``) and let the model write the
rest: the arguments are not grammar-constrained, so a call the model botches comes back as text, as
with ``auto``. ``none`` declares the tools but parses nothing. Models whose own template writes calls
in another format than ``<tool_call>`` are refused (400), never silently misread.

Safety (DESIGN §6): a Bearer API key when one is configured (401 otherwise, compared in constant
time), a request-body size limit enforced while the body streams in (413), strict validation
(400 ``invalid_request_error`` for malformed fields and for requests the model cannot honour, such as a
prompt longer than its context: the status OpenAI and vLLM give, which the official SDK raises as
``BadRequestError``), and a loopback bind by default (the body limit and loopback check are
:mod:`alignkit.httpguard`, shared with the annotation app).

``stream: true`` answers with server-sent events in OpenAI's ``chat.completion.chunk`` format (a
role chunk per choice, content chunks as the model decodes, a ``finish_reason`` chunk per choice,
``stream_options.include_usage`` honoured, ``data: [DONE]``). The engine reports every token from its
decode loop (``on_token``); :class:`~alignkit.generate.streaming.TextDeltas` turns each choice's
tokens into text deltas that join to exactly the non-streamed text (stop strings and split UTF-8
characters held back). A request the engine refuses before its first token is a plain 400.

Concurrent requests, streamed or not, are merged into shared engine batches by
:class:`BatchingQueue`; the endpoint is async and waits on the batcher without holding a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from typing import Any, Literal

from fastapi import Request  # at module level: FastAPI resolves the routes' string annotations here
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alignkit.data.records import ChatMessage, ToolSpec, check_tool_use
from alignkit.data.toolcalls import (
    CALL_OPEN,
    Conversation,
    ToolCallParser,
    forced_call_prefix,
    template_source,
    template_supports_tools,
)
from alignkit.errors import DataError
from alignkit.generate.batcher import BatchingQueue
from alignkit.generate.engine import GenerationError, SamplingParams
from alignkit.generate.streaming import TextDeltas
from alignkit.httpguard import BodyLimit, is_loopback, send_json  # noqa: F401  (is_loopback re-exported)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class _FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the function to call: ``{"type": "function", "function": {"name": ...}}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: _FunctionName


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
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

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
    "functions",
    "function_call",
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
    """400 in OpenAI's error format, naming the first invalid field (OpenAI and vLLM answer 400, not
    FastAPI's default 422, and clients map the status to the exception they raise)."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return _error(400, f"{loc}: {first.get('msg', 'invalid')}", param=loc or None)


def _routes(tokenizer):
    from fastapi import APIRouter

    router = APIRouter()
    native_tools = template_supports_tools(tokenizer)  # the template renders tools itself

    @router.get("/health")
    def health(request: Request) -> dict[str, Any]:
        return {"status": "ok", "model": request.app.state.model_name, **request.app.state.counters}

    @router.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        state = request.app.state
        return {"object": "list", "data": [
            {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "alignkit"}]}

    @router.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        # async: a request waits on the batcher's future without holding a thread; the batcher merges
        # concurrent requests (streamed or not) into shared engine batches
        state = request.app.state
        refusal = _refusal(req, state.model_name) or _tool_refusal(req, tokenizer, native_tools)
        if refusal is not None:
            return refusal
        params = _sampling_params(req, state.default_max_tokens)
        plan = _ToolPlan(req)
        prompt = plan.prompt([m.canonical() for m in req.messages])
        if req.stream:
            return await _stream(state, tokenizer, req, prompt, params, plan)
        try:
            result = await asyncio.wrap_future(state.batcher.submit_async(prompt, params))
        except GenerationError as exc:
            return _error(400, str(exc), param="messages")
        replies = [plan.reply(c) for c in result.completions]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": state.model_name,
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "finish_reason": finish,
                    "logprobs": _logprobs(tokenizer, c, req.top_logprobs or 0) if req.logprobs else None,
                }
                for i, (c, (message, finish)) in enumerate(zip(result.completions, replies, strict=True))
            ],
            "usage": _count_usage(state, result),
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


def _tool_refusal(req: ChatRequest, tokenizer, native: bool):
    """The error response for a request whose tools, tool_choice or tool messages cannot be honoured, or None.

    ``native``: the model's template renders tools itself; its calls are read only in the ``<tool_call>``
    format, and a call is forced only in the default format."""
    if not (req.tools or req.tool_choice or any(m.tool_calls or m.tool_call_id for m in req.messages)):
        return None
    if native and CALL_OPEN not in template_source(tokenizer):
        return _error(400, "this model's chat template writes tool calls in its own format; alignkit serve reads "
                      f"the {CALL_OPEN} format (alignkit's default format and Hermes/Qwen-style templates)",
                      param="tools")
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    try:
        check_tool_use([m.canonical() for m in req.messages], tools, "request", "messages")
    except DataError as exc:
        return _error(400, str(exc).removeprefix("request: "), param="messages")
    choice = req.tool_choice
    if choice not in (None, "none") and not tools:
        return _error(400, "tool_choice needs tools", param="tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in {t["function"]["name"] for t in tools}:
        return _error(400, f"tool_choice names an undeclared function {choice.function.name!r}", param="tool_choice")
    forced = choice == "required" or isinstance(choice, NamedToolChoice)
    if forced and native:
        return _error(400, "tool_choice required or a named function needs alignkit's default tool format "
                      "(this model's template renders tools itself)", param="tool_choice")
    if forced and req.continue_final_message:
        return _error(400, "tool_choice required or a named function cannot continue a final message",
                      param="tool_choice")
    if req.parallel_tool_calls is False:
        return _error(400, "parallel_tool_calls=false is not supported (the model may call several functions)",
                      param="parallel_tool_calls")
    return None


class _ToolPlan:
    """How one request uses tools: what the engine renders, and how each reply is read back."""

    def __init__(self, req: ChatRequest):
        self.tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
        choice = req.tool_choice if self.tools else None
        self.parse = self.tools is not None and choice != "none"
        named = choice.function.name if isinstance(choice, NamedToolChoice) else None
        self.prefix = forced_call_prefix(named) if (choice == "required" or named) else ""

    def prompt(self, messages: list[dict]):
        """The engine prompt: the messages, with the tools and a forced call opening when there are any."""
        if self.tools is None and not any(m.get("tool_calls") or m.get("tool_call_id") for m in messages):
            return messages
        return Conversation(messages + ([{"role": "assistant", "content": self.prefix}] if self.prefix else []),
                            self.tools)

    def parser(self) -> ToolCallParser | None:
        """A parser for one reply (None: the reply is plain text); it has already read the forced opening."""
        if not self.parse:
            return None
        parser = ToolCallParser(self.tools, make_id=lambda _i: f"call_{uuid.uuid4().hex[:24]}")
        parser.feed(self.prefix)
        return parser

    @staticmethod
    def finish_reason(parser: ToolCallParser | None, engine_reason: str) -> str:
        return "tool_calls" if parser is not None and parser.result.tool_calls and engine_reason == "stop" \
            else engine_reason

    def reply(self, completion) -> tuple[dict[str, Any], str]:
        """``(message, finish_reason)`` of one non-streamed completion."""
        parser = self.parser()
        if parser is None:
            return {"role": "assistant", "content": completion.text}, completion.finish_reason
        parser.feed(completion.text)
        parser.finish()
        message: dict[str, Any] = {"role": "assistant", "content": parser.result.content}
        if parser.result.tool_calls:
            message = {"role": "assistant", "content": parser.result.content or None,
                       "tool_calls": parser.result.tool_calls}
        return message, self.finish_reason(parser, completion.finish_reason)


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


def _count_usage(state, result) -> dict[str, int]:
    """The answer's ``usage``, also added to the server's /health counters."""
    completion_tokens = sum(len(c.token_ids) for c in result.completions)
    with state.counters_lock:
        state.counters["requests"] += 1
        state.counters["prompt_tokens"] += result.prompt_tokens
        state.counters["completion_tokens"] += completion_tokens
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": result.prompt_tokens + completion_tokens}


async def _stream(state, tokenizer, req: ChatRequest, prompt, params: SamplingParams, plan: _ToolPlan):
    """Submit a streamed request and wait for its first token: a refusal before it is a 400, then SSE.

    The batcher's worker thread posts ``(choice, token id)`` for every decoded token, then ``None``
    when the request is finished, onto an asyncio queue of this event loop.
    """
    from fastapi.responses import StreamingResponse

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def post(item) -> None:  # called from the batcher's thread
        with contextlib.suppress(RuntimeError):  # the event loop is gone: the server is shutting down
            loop.call_soon_threadsafe(inbox.put_nowait, item)

    future = state.batcher.submit_async(prompt, params, on_token=lambda j, tok: post((j, tok)))
    future.add_done_callback(lambda _f: post(None))
    try:
        first = await inbox.get()
    except asyncio.CancelledError:
        future.cancel()  # the client left before its batch started: withdraw the request
        raise
    failure = future.exception() if first is None else None
    if failure is not None:  # refused before the first token: still time for a plain error response
        if isinstance(failure, GenerationError):
            return _error(400, str(failure), param="messages")
        return _error(500, str(failure), "server_error")
    include_usage = bool(((req.model_extra or {}).get("stream_options") or {}).get("include_usage"))
    choices = [_StreamedChoice(TextDeltas(tokenizer, params.stop), plan.parser()) for _ in range(params.n)]
    events = _sse_events(first, inbox, future, choices, state, include_usage)
    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})


class _StreamedChoice:
    """One streamed choice: its text deltas, read for tool calls when the request has tools."""

    def __init__(self, deltas: TextDeltas, parser: ToolCallParser | None):
        self.deltas, self.parser = deltas, parser

    def deltas_for(self, text: str, final: bool = False) -> list[dict[str, Any]]:
        """The ``delta`` objects for new text (``final``: the end of the reply)."""
        if self.parser is None:
            return [{"content": text}] if text else []
        events = self.parser.feed(text) + (self.parser.finish() if final else [])
        out = []
        for kind, value in events:
            if kind == "content":
                out.append({"content": value})
            else:
                out.append({"tool_calls": [{"index": self.parser.result.tool_calls.index(value), **value}]})
        return out


async def _sse_events(first, inbox: asyncio.Queue, future, choices: list[_StreamedChoice], state,
                      include_usage: bool):
    """OpenAI's ``chat.completion.chunk`` server-sent events: a role chunk per choice, content (and
    tool-call) deltas as tokens arrive (everything already decoded is sent together), then per choice the
    held-back rest and a ``finish_reason`` chunk; usage if asked; ``[DONE]``. An engine failure mid-stream
    is an ``error`` event (the status line has already gone out)."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": state.model_name}

    def event(choices: list, **extra) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra}, ensure_ascii=False)}\n\n"

    def deltas(i: int, text: str, final: bool = False):
        for delta in choices[i].deltas_for(text, final):
            yield event([{"index": i, "delta": delta, "finish_reason": None}])

    for i in range(len(choices)):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    item = first
    while item is not None:
        batch = [item]
        while batch[-1] is not None and not inbox.empty():
            batch.append(inbox.get_nowait())
        tokens: dict[int, list[int]] = {}
        for j, tok in (x for x in batch if x is not None):
            tokens.setdefault(j, []).append(tok)
        for j, toks in tokens.items():
            for chunk in deltas(j, choices[j].deltas.add(toks)):
                yield chunk
        item = None if batch[-1] is None else await inbox.get()
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream, as OpenAI/vLLM do
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error', 'param': None}})}\n\n"
        yield "data: [DONE]\n\n"
        return
    for i, c in enumerate(result.completions):
        for chunk in deltas(i, choices[i].deltas.finish(c.text), final=True):
            yield chunk
        finish = _ToolPlan.finish_reason(choices[i].parser, c.finish_reason)
        yield event([{"index": i, "delta": {}, "finish_reason": finish}])
    usage = _count_usage(state, result)
    if include_usage:
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


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
