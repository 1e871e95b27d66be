"""Scripted judges for the judge tests: an in-process backend and a fault-injecting HTTP server.

Both answer LongReward prompts by recognising which of our templates they were built from, and
derive the rating from the answer being judged, so the expected scores are known in advance:

* helpfulness = logicality = completeness = the number of words of the answer, capped at 10;
* statements = the answer's sentences (split on "."), or NONE for an answer without a period;
* support = "Fully" when the statement contains "sky", "Partially" when it contains "grass", else "No";
* an answer containing NOSCORE is always rated without a ``[[score]]`` (so it must end as a failure).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alignkit.judge.backends import BackendAnswer, TransientError


def _between(text: str, start: str, end: str) -> str:
    i = text.rindex(start) + len(start)
    j = text.index(end, i) if end else len(text)
    return text[i:j].strip()


def template_of(prompt: str) -> str:
    if "Rate how helpful" in prompt or "评估这个回答对用户有多大帮助" in prompt:
        return "helpfulness"
    if "Rate the logical quality" in prompt or "只评估回答的逻辑质量" in prompt:
        return "logicality"
    if "List the factual statements" in prompt or "请列出回答中需要对照文档核实的事实陈述" in prompt:
        return "statements"
    if "Decide whether a statement is supported" in prompt or "判断一条陈述是否得到" in prompt:
        return "support"
    if "Extract from this part all the information" in prompt or "请从这一部分中提取" in prompt:
        return "extract"
    if "Rate how complete" in prompt or "请评估助手回答的完整性" in prompt:
        return "completeness"
    raise ValueError(f"unrecognised prompt: {prompt[:80]!r}")


def scripted_answer(prompt: str) -> str:
    kind = template_of(prompt)
    if kind in ("helpfulness", "logicality", "completeness"):
        answer = _between(prompt, "[Answer]\n", "\n[Analysis]")
        if "NOSCORE" in answer:
            return "The answer is hard to judge and I will not give a rating."
        score = min(10, len(answer.split()))
        # an earlier bracketed number must not be taken: the LAST match counts
        return f"Compared with [[1]] in the examples, this answer is different.\n[Rating]\n[[{score}]]"
    if kind == "statements":
        answer = _between(prompt, "[Answer]\n", "\n[Statements]")
        facts = [s.strip() for s in answer.split(".") if s.strip()] if "." in answer else []
        if not facts:
            return "<statement>NONE</statement>"
        return "\n".join(f"<statement>{f}.</statement>" for f in facts)
    if kind == "support":
        statement = _between(prompt, "[Statement]\n", "\n[Analysis]")
        level = (
            "Fully supported"
            if "sky" in statement
            else "Partially supported"
            if "grass" in statement
            else "No support"
        )
        return f"Checked against the passages.\n[Verdict]\n[[{level}]]"
    chunk = _between(prompt, "[Document part]\n", "\n[Question]")
    return "1. " + chunk[:60] if chunk else "No relevant information"


class ScriptedBackend:
    """In-process backend answering with :func:`scripted_answer`; records every call."""

    kind = "fake"
    model_id = "scripted"
    context_window = 8192

    def __init__(self, tokenizer, fail_first: int = 0):
        self.tokenizer = tokenizer
        self.calls: list[dict] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
        with self._lock:
            self.calls.append(
                {
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "stop": list(stop),
                }
            )
            if len(self.calls) <= self.fail_first:
                raise TransientError("HTTP 500: scripted")
        prompt = messages[-1]["content"]
        return BackendAnswer(scripted_answer(prompt), len(prompt.split()), 7, "stop")


class FaultServer:
    """A real HTTP server on loopback speaking the OpenAI chat API, with injected faults.

    Every distinct request body is first answered with a fault chosen from its hash (HTTP 500, a
    timeout, malformed JSON, truncated JSON, a 200 without choices) or, for a quarter of them, not at
    all; later tries get the scripted answer. ``answered`` maps each body hash to the number of good
    answers sent, so tests can check that nothing already answered is requested again.
    """

    FAULTS = ("500", "timeout", "malformed", "truncated", "no_choices", None, None, None)

    def __init__(self, timeout_sleep: float = 1.5, faults: bool = True, delay: float = 0.0, answer=None):
        self.timeout_sleep = timeout_sleep
        self.faults, self.delay = faults, delay  # faults=False: every request answered, after `delay` s
        self.answer = answer or scripted_answer  # prompt text -> answer text (other judges' prompts)
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.answered: dict[str, int] = {}
        self.requests = 0
        self.seeds: list[int | None] = []  # the seed of every request received, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                server._handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, handler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        try:
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _handle(self, handler, body: bytes) -> None:
        key = hashlib.sha256(body).hexdigest()
        try:
            seed = json.loads(body).get("seed")
        except ValueError:
            seed = None
        with self.lock:
            self.requests += 1
            self.seeds.append(seed)
            tries = self.seen.get(key, 0)
            self.seen[key] = tries + 1
        fault = self.FAULTS[int(key[:8], 16) % len(self.FAULTS)] if tries == 0 and self.faults else None
        time.sleep(self.delay)
        if fault == "500":
            return self._send(handler, 500, b'{"error": "injected"}')
        if fault == "timeout":
            time.sleep(self.timeout_sleep)
            return self._send(handler, 200, b'{"choices": []}')
        if fault == "malformed":
            return self._send(handler, 200, b"<html>gateway hiccup</html>")
        req = json.loads(body)
        text = self.answer(req["messages"][-1]["content"])
        good = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "model": req["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
            }
        ).encode()
        if fault == "truncated":
            return self._send(handler, 200, good[: len(good) // 2])
        if fault == "no_choices":
            return self._send(handler, 200, b'{"object": "chat.completion", "choices": []}')
        with self.lock:
            self.answered[key] = self.answered.get(key, 0) + 1
        return self._send(handler, 200, good)


def sentences_reward(answer: str) -> dict[str, float]:
    """Expected scores of :func:`scripted_answer` for an answer (NOSCORE answers excluded)."""
    words = min(10, len(answer.split()))
    facts = [s.strip() for s in answer.split(".") if s.strip()] if "." in answer else []
    if facts:
        levels = [1.0 if "sky" in f else 0.5 if "grass" in f else 0.0 for f in facts]
        faith = 10 * sum(levels) / len(levels)
    else:
        faith = 10.0
    return {"helpfulness": words, "logicality": words, "faithfulness": faith, "completeness": words}


def critique_answer(prompt: str) -> str:
    """Scripted Math-Critique / self-reflect judge (answers our math_critique[_official] and reflect_* prompts).

    Critique (either rubric): overall 9 when the student's final answer equals the reference's, else 2; a student
    answer containing NOSCORE gets a critique without any score block (a parse failure).
    Reflect judge: '1' when the solution's final answer equals the standard answer, else '0'
    (NOSCORE: an answer that is neither). CoT: always "The answer is 4.", with NOSCORE for a quarter
    of the questions (by hash). Revise: a correct solution ending with the hinted answer.
    """
    from alignkit.data.mathgen import check_answer, extract_final_answer

    official = "[Assistant's answer begins]\n" in prompt
    if "[Student answer]\n" in prompt or official:
        if official:
            student = _between(prompt, "[Assistant's answer begins]\n", "\n[Assistant's answer ends]")
            reference = _between(prompt, "[Reference answer begins]\n", "\n[Reference answer ends]")
        else:
            student = _between(prompt, "[Student answer]\n", "\n[Critique]")
            reference = _between(prompt, "[Reference answer]\n", "\n[Student answer]")
        if "NOSCORE" in student:
            return "The answer is unclear and I will not grade it."
        ok = check_answer(student, extract_final_answer(reference) or "")
        s = 9 if ok else 2
        return f"Compared with the reference.\n{{'factual correctness': {s}, 'overall score': {s}}}"
    if "[Standard answer]\n" in prompt:
        solution = _between(prompt, "[Solution]\n", "\n[Standard answer]")
        answer = _between(prompt, "[Standard answer]\n", "\n[Verdict]")
        if "NOSCORE" in solution:
            return "Maybe."
        return "1" if check_answer(solution, answer) else "0"
    if prompt.startswith("Given a science or math question"):
        question = _between(prompt, "Q: ", "\nA:")
        noise = "NOSCORE " if hashlib.sha256(question.encode()).digest()[0] % 4 == 0 else ""
        return f"{noise}Let me think step by step.\nThe answer is 4."
    if "[Correct final answer]\n" in prompt:
        answer = _between(prompt, "[Correct final answer]\n", "")
        return f"Reflection: the arithmetic slipped.\nCorrect solution: Redo the steps carefully.\nThe answer is {answer}."
    raise ValueError(f"unrecognised prompt: {prompt[:80]!r}")
