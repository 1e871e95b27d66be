"""A thread-safe front for one engine that merges concurrent requests into shared batches.

The HF engine is not re-entrant and is most efficient on batches, while the server and the local
judge receive requests one at a time from many threads. ``BatchingQueue.submit`` blocks its caller;
a single worker thread drains everything pending, groups requests whose sampling parameters agree
(seeds may differ: they are passed per request), and runs one ``engine.generate`` per group. A
request that the engine refuses (for example a prompt longer than the context) fails alone: a
failing group is retried one request at a time so its neighbours still get their answers (a request
that already streamed tokens is not retried: it fails with the group's error).

Streaming: a request submitted with ``on_token(completion index, token id)`` is told every token as
the engine decodes it (called from the worker thread; see ``Engine.generate``), while its future
still resolves to the whole :class:`GenerationResult` at the end. A request whose future was
cancelled before the worker took it (its client went away) is dropped.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from alignkit.generate.engine import GenerationResult, Prompt, SamplingParams


@dataclasses.dataclass
class _Request:
    prompt: Prompt
    params: SamplingParams
    apply_chat_template: bool
    future: Future
    on_token: Callable[[int, int], None] | None = None
    streamed: bool = False  # on_token was called at least once


def _group_key(req: _Request) -> tuple:
    fields = dataclasses.asdict(req.params)
    fields.pop("seed")
    return (req.apply_chat_template, repr(sorted(fields.items())))


class BatchingQueue:
    """Serialise access to ``engine`` and batch concurrent callers together."""

    def __init__(self, engine, max_requests_per_batch: int = 64):
        self.engine = engine
        self.max_requests_per_batch = max_requests_per_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="alignkit-batcher", daemon=True)
        self._worker.start()

    def submit(
        self, prompt: Prompt, params: SamplingParams, apply_chat_template: bool = True
    ) -> GenerationResult:
        """Generate for one prompt; blocks until its batch is done. Engine errors are re-raised here."""
        return self.submit_async(prompt, params, apply_chat_template).result()

    def submit_async(
        self,
        prompt: Prompt,
        params: SamplingParams,
        apply_chat_template: bool = True,
        on_token: Callable[[int, int], None] | None = None,
    ) -> Future:
        """Queue one prompt; the future resolves to its result. ``on_token(completion index, token id)``
        (optional) is called from the worker thread for every token as it is decoded. Cancelling the
        future before its batch starts withdraws the request."""
        if self._closed:
            raise RuntimeError("BatchingQueue is closed")
        fut: Future = Future()
        self._queue.put(_Request(prompt, params, apply_chat_template, fut, on_token))
        return fut

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            stop = False
            while len(pending) < self.max_requests_per_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                pending.append(item)
            groups: dict[tuple, list[_Request]] = {}
            for req in pending:
                if req.future.set_running_or_notify_cancel():  # False: cancelled while it waited
                    groups.setdefault(_group_key(req), []).append(req)
            for reqs in groups.values():
                self._serve(reqs)
            if stop:
                return

    def _serve(self, reqs: list[_Request]) -> None:
        params = dataclasses.replace(reqs[0].params, seed=None)
        streaming = {}
        if any(r.on_token is not None for r in reqs):  # only then: engines without streaming still work
            streaming["on_token"] = lambda i, j, tok: _tell(reqs[i], j, tok)
        try:
            results = self.engine.generate(
                [r.prompt for r in reqs],
                params,
                apply_chat_template=reqs[0].apply_chat_template,
                seeds=[r.params.seed for r in reqs],
                **streaming,
            )
        except Exception as exc:  # noqa: BLE001 - isolate the offending request(s), report to callers
            if len(reqs) == 1:
                reqs[0].future.set_exception(exc)
                return
            for r in reqs:
                if r.streamed:  # its client already holds tokens: a retry would send them twice
                    r.future.set_exception(exc)
                else:
                    self._serve([r])
            return
        for r, res in zip(reqs, results, strict=True):
            r.future.set_result(res)


def _tell(req: _Request, completion: int, token: int) -> None:
    """Pass one token to the request's listener; a listener that raises is detached (its request still
    gets its result, and the batch it shares keeps decoding for the others)."""
    if req.on_token is None:
        return
    req.streamed = True
    try:
        req.on_token(completion, token)
    except Exception:  # noqa: BLE001 - one broken listener must not fail its neighbours' generation
        req.on_token = None
