"""ChatGLM-RLHF end to end on tiny random models: simulated annotators label pairs in the annotation app
over HTTP, ``alignkit annotate export`` writes the preference rows, ``alignkit rm`` trains a reward
model on them and ``alignkit rl reward.type=model`` optimises a policy against it."""

from __future__ import annotations

import json
import math
import random

import httpx
import pytest
from annotate_helpers import CRITERIA, api_login, live_server, write_jsonl

from alignkit.annotate.db import open_database
from alignkit.cli import main

QUIET = ["train.progress=false", "train.report_to=[]"]
TOPICS = "rain music coffee trains maps bread rivers clocks".split()


def _items() -> list[dict]:
    """Two responses per prompt; the simulated annotators prefer the one that ends with 'thanks'."""
    rows = []
    for i, topic in enumerate(TOPICS):
        polite, blunt = f"{topic} is fine, thanks", f"{topic} no"
        rows.append({"prompt": f"Tell me about {topic}.", "responses": [polite, blunt] if i % 2 else [blunt, polite]})
    return rows


def _label(client: httpx.Client, url: str, csrf: str, rng: random.Random, flip: float) -> int:
    """Label every item the server hands out: the 'thanks' response wins, flipped with probability ``flip``."""
    done = 0
    while (task := client.get("/api/next").json()["task"]) is not None:
        left_wins = task["left"].endswith("thanks") != (rng.random() < flip)
        hi, lo = (5, 2) if left_wins else (2, 5)
        body = {"assignment_id": task["assignment_id"], "choice": "left" if left_wins else "right",
                "ratings": {c: {"left": hi, "right": lo} for c in CRITERIA}}
        r = client.post("/api/labels", json=body, headers={"X-CSRF-Token": csrf, "Origin": url})
        assert r.status_code == 201, r.text
        done += 1
    return done


@pytest.mark.slow
def test_annotations_to_reward_model_to_rl(tmp_path, tiny_lm, capsys):
    model, tok = tiny_lm
    policy_dir = tmp_path / "policy"
    model.save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)

    # the walkthrough's commands (docs/rl.md), through the real entry point
    db_path = str(tmp_path / "ann.sqlite")
    assert main(["annotate", "init", "--db", db_path, "--redundancy", "3"]) == 0
    tokens = []
    for name in ("ann0", "ann1", "ann2"):
        capsys.readouterr()
        assert main(["annotate", "users", "add", name, "--db", db_path]) == 0
        tokens.append(capsys.readouterr().out.strip())
    assert main(["annotate", "import", str(write_jsonl(tmp_path / "items.jsonl", _items())), "--db", db_path]) == 0
    db = open_database(db_path)
    labels = 0
    with live_server(db) as url:
        for k, token in enumerate(tokens):
            with httpx.Client(base_url=url) as client:
                # two careful annotators and one who flips 40% of the time: the majority is always right
                labels += _label(client, url, api_login(client, token), random.Random(k), 0.4 if k == 2 else 0.0)
    db.close()
    assert labels == 3 * len(TOPICS)

    prefs = tmp_path / "prefs.jsonl"
    assert main(["annotate", "export", "--db", str(db_path), "--out", str(prefs), "--min-agreement", "0.6"]) == 0
    rows = [json.loads(x) for x in prefs.read_text().splitlines()]
    assert len(rows) == len(TOPICS)
    assert all(r["chosen"].endswith("thanks") and not r["rejected"].endswith("thanks") for r in rows)
    assert all(r["meta"]["n_labels"] == 3 and r["meta"]["agreement"] >= 2 / 3 for r in rows)

    rm_dir = tmp_path / "rm"
    assert main(["rm", "--config", "configs/rm_smollm2.yaml", f"model.name_or_path={policy_dir}", "model.lora=null",
                 f"data.train={prefs}", "data.eval_fraction=0", "train.batch_size=4", "train.max_steps=3",
                 "train.lr=1e-3", "train.precision=fp32", f"train.output_dir={rm_dir}", *QUIET]) == 0
    rm_summary = json.loads((rm_dir / "summary.json").read_text())
    assert rm_summary["steps"] == 3 and math.isfinite(rm_summary["final_loss"])

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in rows])
    rl_dir = tmp_path / "rl"
    assert main(["rl", "--config", "configs/rl_ppo_smollm2.yaml", "reward.type=model", f"reward.model={rm_dir}",
                 "reward.reference_baseline=true",
                 f"model.name_or_path={policy_dir}", f"data.train={prompts}", f"data.eval={prompts}",
                 "data.eval_max_new_tokens=6", "rollout.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=6",
                 "ppo.num_minibatches=1", "ppo.epochs=1", "ppo.micro_batch_size=4", "train.max_steps=1",
                 "train.lr=1e-3", "train.save_every=null", f"train.output_dir={rl_dir}", "train.report=false",
                 *QUIET]) == 0
    summary = json.loads((rl_dir / "summary.json").read_text())
    assert summary["reward"] == "model" and summary["steps"] == 1 and summary["reward_failures"] == 0
    # held-out "reward" is the reward model's score: finite, and a real number, not a verifier's 0/1
    assert math.isfinite(summary["heldout_before"]["reward_mean"]) and summary["heldout_after"]["failed"] == 0
    step = json.loads((rl_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(step["reward/mean"]) and step["reward/failed"] == 0
    assert (rl_dir / "model.safetensors").exists()
