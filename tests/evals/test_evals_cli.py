"""The ``alignkit eval`` commands through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from alignkit.cli import main
from alignkit.evals.report import load_results


def test_build_mini_is_deterministic(tmp_path, capsys):
    args = ["eval", "build-mini", "--lengths", "1k", "--samples-per-length", "2", "--suite-seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix == ".jsonl")
    assert (tmp_path / "a" / "config.yaml").is_file()  # the resolved config, saved beside the outputs
    assert files == [
        f"{n}.jsonl"
        for n in sorted(
            ["mini_kv_retrieval", "mini_passage_count", "mini_passage_retrieval", "mini_single_fact_qa"]
        )
    ]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert main(["eval", "build-mini", "--out", str(tmp_path / "c"), "--lengths", "huge"]) == 2
    assert "unknown length 'huge'" in capsys.readouterr().err


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_textgen_command(tmp_path, capsys):
    data = _jsonl(tmp_path / "gen.jsonl", [
        {"hypothesis": "the cat sat on the mat", "references": ["the cat sat on a mat"]},
        {"hypothesis": "a dog ran in the park", "reference": "a dog ran through the park"},
        {"hypothesis": "it rained all day", "references": ["it was raining all day", "rain all day"]},
    ])  # fmt: skip
    out = tmp_path / "res.json"
    assert main(["eval", "textgen", "--data", data, "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (
        0 < res["bleu"] < 1
        and 0 < res["distinct"] <= 1
        and "fw-bw-bleu" in res
        and "self-bleu hashvalue" in res
    )
    bad = _jsonl(tmp_path / "bad.jsonl", [{"hypothesis": "x", "references": []}])
    assert main(["eval", "textgen", "--data", bad]) == 2
    assert "bad.jsonl:1: field 'references'" in capsys.readouterr().err


def test_wed_command_with_a_vector_file(tmp_path, capsys):
    vecs = tmp_path / "vecs.json"
    vecs.write_text(json.dumps({"cat": [1, 0], "dog": [1, 1], "sat": [0, 1]}))
    data = _jsonl(
        tmp_path / "pairs.jsonl",
        [{"a": "cat sat", "b": "dog sat", "label": 1}, {"a": "cat", "b": "zzz", "label": 0}],
    )
    out = tmp_path / "sims.jsonl"
    args = [
        "eval",
        "wed",
        "--data",
        data,
        "--embeddings",
        str(vecs),
        "--normalize",
        "tight",
        "--threshold",
        "0.5",
    ]
    assert main(args + ["--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accuracy"] == 1.0 and summary["embeddings"] == "dict:vecs.json"
    sims = [json.loads(line)["similarity"] for line in out.read_text().splitlines()]
    assert sims[1] == 0.0 and 0.5 < sims[0] < 1
    assert main(["eval", "wed", "--data", data, "--embeddings", "nowhere.json"]) == 2


@pytest.mark.parametrize(
    "command, text, message",
    [
        ("wed", '{"a": "x", "b": "y"}\n\n{"a": "x"}\n', "pairs.jsonl:3: field 'b': missing"),
        ("wed", '{"a": "x", "b": 3}\n', "pairs.jsonl:1: field 'b': expected a string, got int"),
        ("wed", '{"a": "x", "b": "y"}\n{"a": ', "pairs.jsonl:2: invalid JSON"),
        ("wed", "[1, 2]\n", "pairs.jsonl:1: expected a JSON object, got list"),
        ("wed", "\n", "pairs.jsonl: no rows"),
        ("textgen", '{"hypothesis": "x", "reference": "y"}\n\n{"hypothesis": "x", "references": [1]}\n',
         "pairs.jsonl:3: field 'references': must be a non-empty list of strings"),
        ("seqa", '{"prompt": "p", "options": "ab", "label": 0}\n', "pairs.jsonl:1: field 'options': expected a list, got str"),
        ("seqa", '{"prompt": "p", "options": ["a", "b"], "label": 2}\n',
         "pairs.jsonl:1: field 'label': 2 is not an index into options"),
    ],
)
def test_eval_data_errors_name_file_line_and_field(tmp_path, capsys, command, text, message):
    """The metric commands read rows with the one reader (data/records.py): file:line: field errors."""
    data = tmp_path / "pairs.jsonl"
    data.write_text(text)
    extra = ["--embeddings", "nowhere.json"] if command == "wed" else []
    assert main(["eval", command, "--data", str(data), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_real_mini_run_on_the_embedded_model(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["eval", "--model", "smollm2-135m-instruct", "--suite", "mini",
            "--tasks", "mini_kv_retrieval,mini_single_fact_qa", "--lengths", "200", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mini_single_fact_qa" in printed and "results:" in printed
    res = load_results(out / "results.json")
    assert res["subject"]["model"]["name"] == "smollm2-135m-instruct" and res["max_input_tokens"] == 7500
    assert len(res["samples"]) == 2 and all(s["pred"] is not None for s in res["samples"])
    assert (out / "scores_by_length.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "config.yaml").is_file() and "mini_kv_retrieval" in (out / "report.md").read_text()
    assert main(["eval", "compare", str(out), str(out / "results.json")]) == 0
    assert "0 not comparable (same model and tokenizer)" in capsys.readouterr().out


@pytest.mark.slow
def test_seqa_command_small(tmp_path):
    data = _jsonl(
        tmp_path / "copa.jsonl",
        [
            {
                "prompt": "The ice cream was left in the sun so",
                "options": ["It melted.", "It froze."],
                "label": 0,
            }
        ],
    )
    out = tmp_path / "seqa.json"
    args = [
        "eval",
        "seqa",
        "--data",
        data,
        "--voters",
        "3",
        "--batch",
        "4",
        "--max-rounds",
        "2",
        "--max-new-tokens",
        "10",
    ]
    assert main(args + ["--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 1 and res["accuracy"] in (0.0, 1.0) and len(res["accuracy hashvalue"]) == 64
    assert 1 <= res["items"][0]["n_voters"] <= 3


def test_config_file_and_flags_merge(tmp_path):
    from alignkit.cli import registry
    from alignkit.commands import resolve

    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text("suite: mini\ntasks: [mini_kv_retrieval]\nlengths: [500, 1k]\nlimit: 3\n")
    cfg, _ = resolve(registry()["eval"], ["--config", str(cfg_file), "--limit", "1", "--no-plot"])
    assert (cfg.tasks, cfg.lengths, cfg.limit, cfg.plot, cfg.resume) == (
        ["mini_kv_retrieval"],
        ["500", "1k"],
        1,
        False,
        True,
    )
    cfg_file.write_text("suite: mini\nbatch_size: 2\nbatchsize: 3\n")
    assert main(["eval", "--config", str(cfg_file)]) == 2  # unknown key, named in the error
