"""RL's remote reward: an `alignkit serve --reward-model` server's scores, failures masked as NaN."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from alignkit.config import load_config
from alignkit.errors import ConfigError
from alignkit.generate.reward_server import SCORE_PATH
from alignkit.train.rl_config import RLConfig
from alignkit.train.rl_rewards import remote_reward


class _Scorer(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Scorer.seen.append((self.path, self.headers.get("Authorization"), body))
        # the length of the completion as its score; a completion "?" cannot be scored (None)
        scores = [None if r["completion"] == "?" else float(len(r["completion"])) for r in body["rows"]]
        data = json.dumps({"scores": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Scorer.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_remote_scores_and_unscorable_rows_are_nan_not_zero(server):
    rows = [{"prompt": "a"}, {"prompt": [{"role": "user", "content": "b"}]}]
    samples = [SimpleNamespace(text="four"), SimpleNamespace(text="?")]
    scores = remote_reward(server, api_key="k")(rows, samples)
    assert scores[0] == 4.0 and math.isnan(scores[1])
    path, auth, body = _Scorer.seen[0]
    assert path == SCORE_PATH and auth == "Bearer k"
    assert body["rows"][1] == {"prompt": [{"role": "user", "content": "b"}], "completion": "?"}


def test_unreachable_server_masks_the_whole_batch(monkeypatch):
    import socket

    import alignkit.generate.reward_server as rs

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    orig = rs.score_remote
    monkeypatch.setattr(rs, "score_remote", lambda *a, **k: orig(*a, **{**k, "retries": 0}))
    scores = remote_reward(f"http://127.0.0.1:{port}")([{"prompt": "a"}], [SimpleNamespace(text="x")])
    assert len(scores) == 1 and math.isnan(scores[0])


def test_remote_needs_an_address():
    with pytest.raises(ConfigError, match="remote_url"):
        load_config(RLConfig, None, ["data.train=x.jsonl", "reward.type=remote"])
    cfg = load_config(RLConfig, None, ["data.train=x.jsonl", "reward.type=sum", "reward.remote_url=http://127.0.0.1:1",
                                       "reward.weights={remote: 1.0, verifier: 0.5}"])
    assert cfg.reward.weights == {"remote": 1.0, "verifier": 0.5}
