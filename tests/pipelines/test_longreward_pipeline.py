"""``alignkit pipeline longreward`` end to end through the CLI.

Fast: a tiny random policy and the fault-injecting HTTP judge (500s, timeouts, malformed and truncated
JSON, answers without a score) — every stage runs, every response ends scored or failed, a rerun
reuses every stage and makes no judge call. Slow: the embedded model as both policy and judge.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from judge_fakes import FaultServer

from alignkit.cli import main
from alignkit.config import ConfigError, load_config
from alignkit.pipelines.longreward import LongRewardPipelineConfig

REPO = Path(__file__).resolve().parents[2]

DOC = (
    "The observatory opened in 1921 on the northern ridge. Its main telescope has a mirror of two metres. "
    "Visitors may enter on Saturdays between ten and four. The sky is dark enough for faint galaxies. "
) * 6


def _prompts(path: Path) -> None:
    rows = [
        {
            "id": f"doc{i}",
            "context": DOC + f" Note {i}: the grass on the ridge is green.",
            "query": f"Question {i}: when did the observatory open and when can visitors come?",
        }
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _config(tmp_path: Path, policy: str, judge_url: str) -> Path:
    _prompts(tmp_path / "prompts.jsonl")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "policy": policy,
        "prompts": {"source": str(tmp_path / "prompts.jsonl"), "eval_prompts": 1},
        "sampling": {"k": 3, "max_new_tokens": 10, "temperature": 1.0, "batch_size": 4},
        "judge": {
            "spec": f"openai:{judge_url}#fault-judge",
            "timeout": 1.0,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_retries": 6,
            "concurrency": 4,
        },
        "scorer": {"completeness_chunk_tokens": 128},
        "pairs": {"min_scored": 2},
        "training": {
            "reference": {"cache": False},
            "data_policy": {"max_length": 512, "max_prompt_length": 480},
            "train": {"max_steps": 2, "batch_size": 1, "lr": 1.0e-4, "report_to": [], "progress": False},
        },
        "evaluation": {
            "max_new_tokens": 8,
            "mini_suite": True,
            "mini_tasks": ["mini_kv_retrieval"],
            "mini_lengths": ["1k"],
            "mini_samples_per_length": 1,
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pipeline_runs_every_stage_under_judge_faults_and_resumes(tmp_path, tiny_policy_dir):
    with FaultServer(timeout_sleep=1.5) as server:
        cfg = _config(tmp_path, tiny_policy_dir, server.url)
        assert main(["pipeline", "longreward", "--config", str(cfg)]) == 0
        run = tmp_path / "run"
        results = json.loads((run / "results.json").read_text())
        scored = [json.loads(x) for x in (run / "scored.jsonl").read_text().splitlines()]
        assert len(scored) == 2 * 3  # two training prompts x K=3
        assert all(r["status"] in ("scored", "failed") for r in scored)
        assert all((r["status"] == "scored") == (r["reward"] is not None) for r in scored)
        assert all(r["failures"] for r in scored if r["status"] == "failed")
        assert results["scores"]["scored"] + results["scores"]["failed"] == 6
        pairs = [json.loads(x) for x in (run / "pairs.jsonl").read_text().splitlines()]
        assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
        assert pairs[0]["prompt"][0]["role"] == "user" and DOC[:40] in pairs[0]["prompt"][0]["content"]
        assert (run / "model" / "config.json").is_file() and results["training"]["steps"] == 2
        ev = results["evaluation"]
        assert ev["judge_before"]["n"] == ev["judge_after"]["n"] == 1
        assert set(ev["mini_before"]["tasks"]) == set(ev["mini_after"]["tasks"]) == {"mini_kv_retrieval"}
        report = (run / "report.md").read_text()
        for needle in (
            "## Preference pairs",
            "## Before / after",
            "pair_gaps.png",
            "scores_distribution.png",
        ):
            assert needle in report
        assert (run / "scores_distribution.png").stat().st_size > 1000
        assert server.requests > len(server.answered)  # faults were injected and survived

        # a rerun of the same output_dir reuses every stage and asks the judge nothing
        before = server.requests
        assert main(["pipeline", "longreward", "--config", str(cfg)]) == 0
        assert server.requests == before
        again = json.loads((run / "results.json").read_text())
        assert again["scores"] == results["scores"] and again["evaluation"] == results["evaluation"]
        assert again["reused_stages"] == ["sample", "score", "train", "evaluate"]
        assert again["stage_seconds"]["train"] == results["stage_seconds"]["train"] > 0

        # EXO on the K-way rows: only training and evaluation run again
        assert (
            main(
                [
                    "pipeline",
                    "longreward",
                    "--config",
                    str(cfg),
                    "pairs.train_on=kway",
                    "training.loss.type=exo",
                ]
            )
            == 0
        )
        exo = json.loads((run / "results.json").read_text())
        assert exo["reused_stages"] == ["sample", "score"]
        assert exo["training"]["loss"] == "exo" and exo["training"]["data"]["kept"] == len(pairs)

        # an interrupted training resumes from its checkpoint and keeps its metrics (it used to start
        # over from step 0 and delete metrics.jsonl): mark the train stage as started, not finished
        stages = json.loads((run / "stages.json").read_text())
        del stages["train"]["fingerprint"]
        (run / "stages.json").write_text(json.dumps(stages))
        (run / "model" / "config.json").unlink()
        metrics = (run / "model" / "metrics.jsonl").read_text()
        assert metrics.strip()
        exo_args = ["pipeline", "longreward", "--config", str(cfg), "pairs.train_on=kway", "training.loss.type=exo"]
        assert main(exo_args) == 0
        assert (run / "model" / "metrics.jsonl").read_text() == metrics  # resumed at step 2 of 2: kept as it was
        assert (run / "model" / "config.json").is_file()
        resumed = json.loads((run / "results.json").read_text())
        assert resumed["reused_stages"] == ["sample", "score", "evaluate"] and resumed["training"]["steps"] == 2


def test_pipeline_refuses_inconsistent_configs(tmp_path):
    bad = [
        (["pairs.train_on=kway"], "needs training.loss.type exo or dpo_rw"),
        (["training.loss.type=exo"], "trains on K-way rows"),
        (["training.train.output_dir=elsewhere"], "set by the pipeline"),
        (["sampling.k=3", "pairs.min_scored=5"], "can never be met"),
        (["scorer.top_kk=3"], "unknown key"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config(LongRewardPipelineConfig, None, overrides)


def test_shipped_longreward_configs_load():
    from alignkit.judge.scoring import LongRewardScoreConfig

    found = sorted((REPO / "configs").glob("longreward*.yaml"))
    assert found
    for path in found:
        cls = LongRewardScoreConfig if "score" in path.name else LongRewardPipelineConfig
        load_config(cls, path, ["input=in.jsonl", "out=out.jsonl"] if "score" in path.name else [])


@pytest.mark.slow
def test_pipeline_on_the_embedded_model_as_policy_and_judge(tmp_path):
    """Small real run: the embedded SmolLM2 samples, judges itself (expected-value weak-judge mode), trains."""
    from pydoc_data.topics import topics

    rows = [
        {"id": "pass", "context": topics["pass"], "query": "What does the pass statement do?"},
        {"id": "break", "context": topics["break"], "query": "What does the break statement do?"},
        {"id": "continue", "context": topics["continue"], "query": "What does the continue statement do?"},
    ]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "prompts": {"source": str(tmp_path / "prompts.jsonl"), "eval_prompts": 1},
        "sampling": {"k": 2, "max_new_tokens": 32, "temperature": 0.9},
        "judge": {"spec": "local:smollm2-135m-instruct", "dtype": "auto"},
        "scorer": {
            "force_format": "expected",
            "attempts": 2,
            "max_tokens": {"statements": 48, "extract": 48},
        },
        "pairs": {"min_scored": 2},
        "training": {"train": {"max_steps": 1, "batch_size": 2, "lr": 1.0e-5, "report_to": []}},
        "evaluation": {"max_new_tokens": 32},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["pipeline", "longreward", "--config", str(path)]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["scores"]["n"] == 4 and results["scores"]["scored"] >= 3
    scored = [json.loads(x) for x in (run / "scored.jsonl").read_text().splitlines()]
    for r in scored:
        if r["status"] == "scored":
            assert all(0 <= r["scores"][d] <= 10 for d in r["scores"])
            assert r["reward"] == pytest.approx(sum(r["scores"].values()) / 4)
    assert results["pairs"]["pairs"] >= 1 and results["training"]["steps"] == 1
    assert (run / "model" / "config.json").is_file()
    assert results["evaluation"]["judge_before"]["n"] == results["evaluation"]["judge_after"]["n"] == 1
    assert "## Before / after" in (run / "report.md").read_text()
