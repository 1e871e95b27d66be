"""Fixtures for the generation tests: a tiny random model saved as a real HF directory."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama with the embedded tokenizer and chat template, saved like any checkpoint."""
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer)
    path = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def serve_in_subprocess(args: list[str], env_extra: dict[str, str]):
    """Run ``python -m alignkit serve ARGS --port P`` and yield its base URL once /health answers."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "serve", *args, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not come up within 120 s")
        time.sleep(0.3)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()

