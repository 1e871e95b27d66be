"""``alignkit eval trajectory``: threshold detection on synthetic curves, chance levels, a CLI run."""

from __future__ import annotations

import json

import pytest

from alignkit.evals.trajectory import chance_levels, emergence_threshold


def test_emergent_curve_threshold_is_bracketed_by_the_last_chance_point():
    # loss falls 3.0 -> 1.8; the score sits at chance (10) until loss 2.2, then rises
    pts = [(3.0, 10.0), (2.8, 11.0), (2.6, 9.0), (2.4, 12.0), (2.2, 30.0), (2.0, 55.0), (1.8, 70.0)]
    th = emergence_threshold(pts, chance=10.0, margin=5.0)
    assert th["status"] == "emerged" and th["bracket"] == [2.2, 2.4] and th["threshold"] == pytest.approx(2.3)
    # the order of the checkpoints does not matter
    assert emergence_threshold(list(reversed(pts)), 10.0, 5.0) == th


def test_a_blip_above_chance_before_the_final_rise_does_not_count():
    pts = [(3.0, 0.0), (2.8, 20.0), (2.6, 0.0), (2.4, 1.0), (2.2, 40.0), (2.0, 60.0)]
    th = emergence_threshold(pts, chance=0.0, margin=5.0)
    assert th["bracket"] == [2.2, 2.4]


def test_always_and_never_above_chance():
    smooth = [(3.0, 40.0), (2.5, 50.0), (2.0, 60.0)]
    assert emergence_threshold(smooth, 0.0, 5.0)["status"] == "always"
    flat = [(3.0, 1.0), (2.5, 4.0), (2.0, 2.0)]
    th = emergence_threshold(flat, 0.0, 5.0)
    assert th["status"] == "never" and th["threshold"] is None
    # the margin decides: a score of exactly chance + margin is not above chance
    assert emergence_threshold([(3.0, 5.0), (2.0, 5.0)], 0.0, 5.0)["status"] == "never"
    with pytest.raises(ValueError):
        emergence_threshold([], 0.0, 1.0)


def test_chance_levels_of_the_mini_tasks():
    recs = {
        "mini_passage_retrieval": [{"context": "Paragraph 1: a\n\nParagraph 2: b\n\nParagraph 3: c\n\nParagraph 4: d"},
                                   {"context": "Paragraph 1: a\n\nParagraph 2: b"}],
        "mini_kv_retrieval": [{"context": "{}"}],
    }
    ch = chance_levels(recs)
    assert ch["mini_passage_retrieval"]["chance"] == pytest.approx(100 * (1 / 4 + 1 / 2) / 2)
    assert ch["mini_kv_retrieval"]["chance"] == 0.0


def test_trajectory_cli_on_two_tiny_checkpoints(tmp_path, tokenizer):
    from safetensors.torch import save_file

    from alignkit.cli import main
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer, seed=0)
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    # a training checkpoint as the loop writes it: wrapped weights ("model." prefix) + the run's config
    run = tmp_path / "run"
    step = run / "checkpoints" / "step-0000002"
    step.mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  name_or_path: {base}\n  lora: null\n")
    (step / "trainer_state.json").write_text('{"step": 2}')
    trained, _ = tiny_random_causal_lm(tokenizer, seed=1)
    save_file({f"model.{k}": v.contiguous() for k, v in trained.state_dict().items() if k != "lm_head.weight"},
              str(step / "model.safetensors"))
    dirs = [str(base), str(step)]
    out = tmp_path / "traj"
    argv = ["eval", "trajectory", "--checkpoints", *dirs, "--tasks", "mini_kv_retrieval", "--corpus", "pydoc",
            "--output-dir", str(out), "lengths=[300]", "samples_per_length=1", "corpus_docs=2", "corpus_chars=300",
            "chance.mini_kv_retrieval=1.5"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["checkpoint"] for r in res["checkpoints"]] == dirs
    assert all(r["loss"] > 5 and r["tokens"] > 0 for r in res["checkpoints"])  # random weights: ~log(vocab)
    losses = [r["loss"] for r in res["checkpoints"]]
    assert losses[0] != losses[1]  # the checkpoint's own weights were loaded, not the base model's
    assert (out / "exported" / "001-step-0000002" / "config.json").is_file()
    assert res["chance"]["mini_kv_retrieval"] == {"chance": 1.5, "how": "given in the config"}
    assert res["thresholds"]["mini_kv_retrieval"]["status"] == "never"
    assert (out / "trajectory_mini_kv_retrieval.png").is_file()
    assert "| mini_kv_retrieval | 1.50 |" in (out / "report.md").read_text()


def test_a_directory_that_is_neither_model_nor_checkpoint_is_refused(tmp_path):
    from alignkit.evals.trajectory import model_directory

    (tmp_path / "run" / "checkpoints" / "step-1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        model_directory(str(tmp_path / "run" / "checkpoints" / "step-1"), tmp_path / "x")
    lora = tmp_path / "lora"
    step = lora / "checkpoints" / "step-1"
    step.mkdir(parents=True)
    (lora / "config.yaml").write_text("model:\n  name_or_path: x\n  lora: {r: 8}\n")
    (step / "trainer_state.json").write_text("{}")
    (step / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="LoRA"):
        model_directory(str(step), tmp_path / "y")
