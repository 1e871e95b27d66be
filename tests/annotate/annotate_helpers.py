"""Helpers for the annotation tests: a seeded database, real servers on loopback, API login.

A uniquely named module (not conftest) so ``from annotate_helpers import ...`` is unambiguous
while other test areas have conftest files of their own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

CRITERIA = ["helpfulness", "harmlessness", "fluency"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_db(tmp_path: Path, n_items: int = 6, redundancy: int = 2, annotators=("alice", "bob", "carol")):
    """A database with ``n_items`` two-response items; returns (db, {name: token})."""
    from alignkit.annotate import auth
    from alignkit.annotate.db import create_database
    from alignkit.annotate.ingest import import_file

    db = create_database(tmp_path / "ann.sqlite", {"redundancy": redundancy, "criteria": CRITERIA, "scale": 5})
    rows = [{"prompt": f"Question {k}?", "responses": [f"Answer {k} one", f"Answer {k} two"]} for k in range(n_items)]
    if n_items:
        import_file(db, write_jsonl(tmp_path / "items.jsonl", rows))
    tokens = {name: auth.add_user(db, name) for name in annotators}
    tokens["admin"] = auth.add_user(db, "admin", role="admin")
    return db, tokens


def full_ratings(left: int = 4, right: int = 2) -> dict:
    return {c: {"left": left, "right": right} for c in CRITERIA}


def form_ratings(left: int = 4, right: int = 2) -> dict:
    out = {}
    for c in CRITERIA:
        out[f"rating.{c}.left"] = str(left)
        out[f"rating.{c}.right"] = str(right)
    return out


@contextmanager
def live_server(db, settings=None):
    """Serve ``db`` with uvicorn in a thread on a pre-bound loopback socket; yields the base URL."""
    from tests.live_server import serve_app_in_thread

    from alignkit.annotate.app import create_app

    with serve_app_in_thread(create_app(db, settings), lifespan="off") as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(db_path: Path, *extra: str):
    """``alignkit annotate serve`` as a child process (so it can be killed); yields (url, Popen)."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignkit", "annotate", "serve", "--db", str(db_path), "--port", str(port),
         "--log-level", "warning", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early: {proc.stdout.read().decode(errors='replace')}")
            try:
                if httpx.get(url + "/login", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 30 s")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        proc.stdout.close()


def api_login(client: httpx.Client, token: str) -> str:
    """Log in through the JSON API; returns the session's CSRF token."""
    r = client.post("/api/session", json={"token": token})
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]
