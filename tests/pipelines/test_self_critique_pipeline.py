"""``alignkit pipeline self-critique`` end to end through the CLI.

Fast: a tiny random policy and a Math-Critique judge over real HTTP with injected faults (500s,
timeouts, malformed and truncated JSON); its score depends on the answer's length so that RFT keeps
some samples and DPO finds pairs. Every stage runs; critic failures stay unscored; a rerun reuses every
stage and makes no judge call. Slow: the embedded model with the verifier critic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from judge_fakes import FaultServer, _between

from alignkit.cli import main
from alignkit.config import ConfigError, load_config
from alignkit.pipelines.self_critique import SelfCritiqueConfig

REPO = Path(__file__).resolve().parents[2]


def length_critic(prompt: str) -> str:
    """Score = 1 + (characters of the student answer mod 10); an answer containing 'ZZ' gets no score."""
    answer = _between(prompt, "[Student answer]\n", "\n[Critique]")
    if "ZZ" in answer:
        return "No verdict."
    return f"Graded.\n{{'overall score': {1 + len(answer) % 10}}}"


def _config(tmp_path: Path, policy: str, url: str) -> Path:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "policy": policy,
        "questions": {"train": 4, "heldout": 2, "level": 1},
        "sampling": {"k": 4, "max_new_tokens": 12, "temperature": 1.0, "batch_size": 8},
        "critic": {"kind": "judge", "judge": {"spec": f"openai:{url}#critic", "timeout": 0.3, "backoff_base": 0.01,
                                              "backoff_max": 0.05, "max_retries": 6, "concurrency": 4},
                   "critique": {"attempts": 2}},
        "rft": {"threshold": 5, "general_rows": 4, "drop_truncated": False,  # a random model never stops
                "train": {"max_steps": 1, "batch_size": 2, "lr": 1.0e-4, "report_to": [], "progress": False}},
        "dpo": {"chosen_min": 5, "min_gap": 2, "reference": {"cache": False},
                "train": {"max_steps": 1, "batch_size": 1, "lr": 1.0e-4, "report_to": [], "progress": False}},
        "evaluation": {"max_new_tokens": 8, "verifiable_prompts": 2},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_self_critique_runs_every_stage_under_judge_faults_and_resumes(tmp_path, tiny_policy_dir):
    with FaultServer(timeout_sleep=0.5, answer=length_critic) as server:
        cfg = _config(tmp_path, tiny_policy_dir, server.url)
        assert main(["pipeline", "self-critique", "--config", str(cfg)]) == 0
        run = tmp_path / "run"
        res = json.loads((run / "results.json").read_text())
        assert set(res["evaluation"]) == {"base", "rft", "dpo"}
        sel = res["rft"]["selection"]
        assert sel["samples"] == 16 and sel["kept"] >= 1
        sft = [json.loads(x) for x in (run / "rft_sft.jsonl").read_text().splitlines()]
        assert {r["source"] for r in sft} == {"rft", "general"}
        assert all(r["score"] >= 5 for r in sft if r["source"] == "rft")
        pairs = [json.loads(x) for x in (run / "dpo_pairs.jsonl").read_text().splitlines()]
        assert pairs and all(p["chosen_score"] - p["rejected_score"] >= 2 for p in pairs)
        for name in ("rft_score", "dpo_score"):
            for r in (json.loads(x) for x in (run / f"{name}.jsonl").read_text().splitlines()):
                assert (r["status"] == "scored") == (r["score"] is not None)
        ev = res["evaluation"]["dpo"]
        assert ev["n"] == 2 and 0 <= ev["exact_accuracy"] <= 1 and ev["verifiable"]["n"] == 2
        report = (run / "report.md").read_text()
        assert "exact accuracy" in report and (run / "stages.png").is_file()

        requests = server.requests
        assert main(["pipeline", "self-critique", "--config", str(cfg)]) == 0
        again = json.loads((run / "results.json").read_text())
        assert server.requests == requests  # nothing re-judged
        assert set(again["reused_stages"]) >= {"rft_sample", "rft_score", "rft_train", "dpo_sample", "dpo_score",
                                               "dpo_train", "evaluate_base", "evaluate_rft", "evaluate_dpo"}

        (run / "eval_dpo.json").unlink()  # as if the run was stopped while evaluating the DPO model
        assert main(["pipeline", "self-critique", "--config", str(cfg)]) == 0
        again = json.loads((run / "results.json").read_text())
        assert {"evaluate_base", "evaluate_rft"} <= set(again["reused_stages"])
        assert "evaluate_dpo" not in again["reused_stages"] and again["evaluation"] == res["evaluation"]


def test_no_pairs_is_an_error_unless_skipping_is_configured(tmp_path, tiny_policy_dir):
    # the verifier critic: a tiny random model never answers correctly, so there are no pairs
    base = ["output_dir=" + str(tmp_path / "run"), f"policy={tiny_policy_dir}", "questions.train=2",
            "questions.heldout=1", "sampling.k=2", "sampling.max_new_tokens=4", "rft.general_rows=2",
            "rft.train.max_steps=1", "rft.train.report_to=[]", "rft.train.progress=false",
            "evaluation.verifiable_prompts=0", "evaluation.max_new_tokens=4"]
    assert main(["pipeline", "self-critique", *base]) == 2
    assert main(["pipeline", "self-critique", *base, "dpo.on_no_pairs=skip"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "dpo" not in res["evaluation"] and res["dpo"]["skipped"]
    assert res["evaluation"]["base"]["critic"]["mean"] == 1.0  # verifier: every answer wrong


def test_shipped_config_loads_and_bad_combinations_are_refused():
    cfg = load_config(SelfCritiqueConfig, REPO / "configs" / "self_critique_smollm2.yaml")
    assert cfg.critic.kind == "verifier" and cfg.sampling.k == 4
    with pytest.raises(ConfigError, match="set by the pipeline"):
        load_config(SelfCritiqueConfig, None, ["rft.train.output_dir=x"])
    # every preference loss owns its dispatch and takes pair rows (exo/dpo_rw with their fixed pair targets)
    assert load_config(SelfCritiqueConfig, None, ["dpo.loss.type=exo"]).dpo.loss.type == "exo"


@pytest.mark.slow
def test_self_critique_on_the_embedded_model(tmp_path):
    out = tmp_path / "run"
    argv = ["pipeline", "self-critique", "--config", str(REPO / "configs" / "self_critique_smollm2.yaml"),
            f"output_dir={out}", "questions.train=3", "questions.heldout=2", "sampling.k=2",
            "sampling.max_new_tokens=32", "rft.general_rows=2", "rft.train.max_steps=1", "dpo.train.max_steps=1",
            "rft.train.progress=false", "dpo.train.progress=false", "evaluation.max_new_tokens=32",
            "evaluation.verifiable_prompts=2"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["rft"]["selection"]["samples"] == 6
    assert {"base", "rft"} <= set(res["evaluation"])  # dpo too when a question had a right and a wrong answer
    assert all(e["n"] == 2 and e["verifiable"]["n"] == 2 for e in res["evaluation"].values())
    assert (out / "report.md").is_file()
