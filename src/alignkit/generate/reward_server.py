"""Reward-model scoring over HTTP: ``alignkit serve --reward-model DIR`` and its client.

``POST /v1/rewards/score`` with ``{"rows": [{"prompt": str | messages, "completion": str | messages}]}``
answers ``{"model", "kind": "rm" | "prm", "scores": [float | null], "steps": [[p, ...]] (prm only)}``,
one score per row in order. A directory holding ``prm.json`` is served as a process reward model
(the aggregated solution score, plus per-step probabilities); any other as an outcome reward model.
A row the model cannot score (a PRM solution with no step) gets ``null`` -- a failure, never 0.
``GET /health`` needs no key.

Safety as for the chat server (DESIGN §6, :mod:`alignkit.generate.server`): a Bearer key when one
is configured (401, constant-time comparison), the request-body limit (413) of the chat server's
middleware, at most ``MAX_ROWS`` rows per request (400, as for every invalid field), and a loopback bind by default.

:func:`score_remote` is the client: retried with backoff on transport errors and 5xx/429, a
timeout per request, and a clear error for answers that will not improve on retry (400/401/413).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alignkit.data.records import ChatMessage
from alignkit.generate.server import DEFAULT_MAX_BODY_BYTES, _bearer_auth, _error, _invalid_request, _respond
from alignkit.httpguard import BodyLimit

SCORE_PATH = "/v1/rewards/score"
MAX_ROWS = 256


class ScoreRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str | list[ChatMessage]
    completion: str | list[ChatMessage]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[ScoreRow] = Field(min_length=1, max_length=MAX_ROWS)


def load_scorer(model_dir: str, batch_size: int = 8, device: str | None = None):
    """A :class:`ProcessRewardScorer` for a PRM directory (``prm.json``), else a :class:`RewardScorer`."""
    from alignkit.train.prm import PRM_FILE
    from alignkit.train.scorers import ProcessRewardScorer, RewardScorer

    if (Path(model_dir) / PRM_FILE).is_file():
        return ProcessRewardScorer(model_dir, batch_size=batch_size, device=device)
    return RewardScorer(model_dir, batch_size=batch_size, device=device)


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(m.content for m in value)


def reward_router(scorer, model_name: str):
    """The scoring endpoint as a FastAPI router; the app that mounts it authenticates (see below)."""
    from fastapi import APIRouter

    from alignkit.train.scorers import ProcessRewardScorer

    router = APIRouter()
    lock = threading.Lock()  # one forward at a time: the model is shared and CPU cores are few
    is_prm = isinstance(scorer, ProcessRewardScorer)

    @router.post(SCORE_PATH)
    def score(req: ScoreRequest) -> Any:
        with lock:
            if is_prm:
                prompts = [_text(r.prompt) for r in req.rows]
                completions = [_text(r.completion) for r in req.rows]
                from alignkit.train.prm import split_steps

                sep = scorer.settings["step_separator"]
                steps = scorer.step_probs(prompts, [split_steps(c, sep) for c in completions])
                scores = scorer.score(prompts, completions)
                return {"model": model_name, "kind": "prm", "scores": scores, "steps": steps}
            prompts = [r.prompt if isinstance(r.prompt, str) else [m.canonical() for m in r.prompt] for r in req.rows]
            completions = [r.completion if isinstance(r.completion, str) else [m.canonical() for m in r.completion]
                           for r in req.rows]
            try:
                scores = scorer.score(prompts, completions)
            except ValueError as exc:  # e.g. a chat template that cannot render the rows
                return _error(400, str(exc))
            return {"model": model_name, "kind": "rm", "scores": scores}

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "kind": "prm" if is_prm else "rm"}

    return router


def create_reward_app(scorer, model_name: str, api_key: str | None = None,
                      max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The scoring app with the chat server's guards: Bearer auth on ``/v1/`` (checked before the
    body is parsed, so an unauthenticated request gets 401), 400 naming the bad field, body limit 413."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    app = FastAPI(title="alignkit reward scoring", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(_bearer_auth(api_key))
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.include_router(reward_router(scorer, model_name))
    return BodyLimit(app, max_body_bytes, _respond) if max_body_bytes else app


def serve_reward_model(model_dir: str, host: str, port: int, api_key: str | None, max_body_bytes: int,
                       log_level: str = "warning", device: str | None = None) -> int:
    """Load ``model_dir`` and serve it until interrupted (``alignkit serve --reward-model``)."""
    import uvicorn

    scorer = load_scorer(model_dir, device=device)
    app = create_reward_app(scorer, model_dir, api_key=api_key, max_body_bytes=max_body_bytes)
    auth = "Bearer key" if api_key else "no auth (loopback only)"
    print(f"serving reward model {model_dir} on http://{host}:{port}{SCORE_PATH} ({auth})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
    return 0


class RemoteScoreError(RuntimeError):
    """The scoring server refused the request or stayed unreachable after the retries."""


def score_remote(url: str, rows: list[dict[str, Any]], api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5) -> list[float | None]:
    """Scores of ``rows`` (``{"prompt", "completion"}``) from a server at ``url`` (its base address).

    Transport errors, 5xx and 429 are retried ``retries`` times (delays ``backoff * 2**i``); other
    errors raise :class:`RemoteScoreError` at once. ``None`` marks a row the model could not score.
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    endpoint = url.rstrip("/") + SCORE_PATH
    last = ""
    for attempt in range(retries + 1):
        try:
            r = httpx.post(endpoint, json={"rows": rows}, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code == 200:
                scores = r.json()["scores"]
                if len(scores) != len(rows):
                    raise RemoteScoreError(f"{endpoint}: {len(scores)} scores for {len(rows)} rows")
                return scores
            last = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code < 500 and r.status_code != 429:
                raise RemoteScoreError(f"{endpoint}: {last}")
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    raise RemoteScoreError(f"{endpoint}: no answer after {retries + 1} attempts ({last})")
