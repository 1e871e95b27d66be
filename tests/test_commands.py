"""The one way in: every command's parser, flags, aliases and --help come from its config model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from alignkit.cli import main, registry, route
from alignkit.commands import Command, flags_of, load, resolve

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {path: c for path, c in registry().items() if isinstance(c, Command)}


def test_every_area_is_registered():
    expected = {"sft", "rm", "dpo", "check-template", "demo", "generate", "serve", "eval", "eval compare",
                "eval build-mini", "eval textgen", "eval wed", "eval seqa", "longreward sample", "longreward score",
                "longreward pairs", "pipeline longreward", "annotate init", "annotate serve", "annotate export",
                "annotate stats", "annotate import", "annotate users add", "models"}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_lists_the_config_keys(path, capsys):
    assert main([*path.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: alignkit {path}")
    cls = load(COMMANDS[path].config)
    for name in cls.model_fields:
        assert f"\n  {name}" in out, f"alignkit {path} --help does not list config key {name!r}"


def test_top_level_and_group_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("sft", "eval", "annotate", "pipeline", "longreward", "demo", "serve"))
    assert main(["annotate", "users", "--help"]) == 0
    assert "rotate" in capsys.readouterr().out
    assert main(["longreward"]) == 2  # a group alone is not a command


# (argv after the command path, expected config values by dotted key): today's flag spellings.
SPELLINGS = [
    ("demo", ["--out", "o", "--n-train", "8", "--n-heldout", "4", "--k", "2", "--sft-steps", "3",
              "--precision", "fp32", "--gen-batch", "2", "--nll-weight", "0.2"],
     {"output_dir": "o", "n_train": 8, "n_heldout": 4, "k": 2, "sft.train.max_steps": 3, "sft.train.precision": "fp32",
      "dpo.train.precision": "fp32", "rl.train.precision": "fp32", "gen_batch": 2, "dpo.nll_weight": 0.2}),
    ("generate", ["--model", "m", "--prompts", "p.jsonl", "--out", "o.jsonl", "--n", "2", "--temperature", "1",
                  "--top-p", "0.9", "--stop", "a,b", "--stop", "\\n", "--no-chat-template", "--seed", "3",
                  "--batch-size", "2"],
     {"model": "m", "prompts": "p.jsonl", "n": 2, "temperature": 1.0, "top_p": 0.9, "stop": ["a,b", "\\n"],
      "chat_template": False, "seed": 3, "batch_size": 2}),
    ("serve", ["--port", "9000", "--host", "0.0.0.0", "--api-key-env", "K", "--served-model-name", "x",
               "--max-body-bytes", "100", "--default-max-tokens", "5", "--log-level", "info"],
     {"port": 9000, "host": "0.0.0.0", "api_key_env": "K", "served_model_name": "x", "max_body_bytes": 100,
      "default_max_tokens": 5, "log_level": "info"}),
    ("eval", ["--suite", "mini", "--lengths", "1k,2k", "--tasks", "mini_kv_retrieval", "--limit", "2", "-o", "d",
              "--no-plot", "--no-resume", "--batch-size", "2"],
     {"suite": "mini", "lengths": ["1k", "2k"], "tasks": ["mini_kv_retrieval"], "limit": 2, "output_dir": "d",
      "plot": False, "resume": False, "batch_size": 2}),
    ("eval", ["--longbench-dir", "lb", "--longbench-e"], {"suite": "longbench", "longbench_dir": "lb",
                                                          "longbench_e": True}),
    ("eval compare", ["a.json", "b.json", "--strict", "--all"], {"a": "a.json", "b": "b.json", "strict": True,
                                                                   "all": True}),
    ("eval seqa", ["--data", "d", "--voters", "3", "--eos-counts-as-end", "--kernel-temperature", "0.2"],
     {"voters": 3, "eos_counts_as_end": True, "kernel_temperature": 0.2}),
    ("longreward sample", ["--data", "d", "--out", "o", "--k", "4", "--top-p", "0.9", "--dtype", "bfloat16"],
     {"data": "d", "k": 4, "top_p": 0.9, "dtype": "bf16"}),  # the old spelling reads as bf16
    ("longreward score", ["--in", "s.jsonl", "--out", "o.jsonl", "--judge", "openai:http://h/v1#m", "--cache",
                          "c.sqlite", "--concurrency", "3", "scorer.top_k=3", "judge.timeout=30"],
     {"input": "s.jsonl", "judge.spec": "openai:http://h/v1#m", "judge.cache": "c.sqlite",
      "judge.concurrency": 3, "scorer.top_k": 3, "judge.timeout": 30.0}),
    ("longreward pairs", ["--in", "s", "--out", "p", "--kway-out", "k", "--min-scored", "2",
                          "--prompt-format", "string"],
     {"input": "s", "kway_out": "k", "min_scored": 2, "prompt_format": "string"}),
    ("annotate stats", ["--json", "--items", "--db", "x.sqlite"], {"as_json": True, "items": True, "db": "x.sqlite"}),
    ("annotate users add", ["alice", "--admin"], {"name": "alice", "admin": True}),
    ("annotate export", ["--out", "o", "--no-meta", "--min-agreement", "0.5"], {"meta": False, "min_agreement": 0.5}),
    ("models", ["--no-verify"], {"verify": False}),
    ("dpo", ["--train.lr", "1e-6", "--data.train", "x.jsonl", "loss.beta=0.2", "--nll-weight", "0.1"],
     {"train.lr": 1e-6, "data.train": "x.jsonl", "loss.beta": 0.2, "nll_weight": 0.1}),
]


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("path, argv, expected", SPELLINGS, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(SPELLINGS)])
def test_flag_spellings_map_to_config_keys(path, argv, expected):
    cfg, _ = resolve(COMMANDS[path], argv)
    assert {k: _get(cfg, k) for k in expected} == expected


EVAL_SUBCOMMANDS = sorted(p.split()[1] for p in registry() if p.startswith("eval "))


@pytest.mark.parametrize("name", EVAL_SUBCOMMANDS)
def test_eval_task_option_names_every_eval_sub_command(name):
    """`alignkit eval --task X ARGS` (or --task=X, anywhere among the arguments) routes like `alignkit eval X ARGS`."""
    reg = registry()
    assert route(reg, ["eval", "--task", name, "--data", "d.jsonl", "k=1"]) == (f"eval {name}", ["--data", "d.jsonl", "k=1"])
    assert route(reg, ["eval", "--data", "d.jsonl", f"--task={name}"]) == (f"eval {name}", ["--data", "d.jsonl"])
    assert route(reg, ["eval", name, "--data", "d.jsonl"]) == (f"eval {name}", ["--data", "d.jsonl"])


def test_eval_task_option_refuses_unknown_missing_and_repeated_values(capsys):
    assert {"mathusereval", "trajectory", "compare", "seqa"} <= set(EVAL_SUBCOMMANDS)
    assert route(registry(), ["eval", "--tasks", "mini_kv_retrieval"]) == ("eval", ["--tasks", "mini_kv_retrieval"])
    for argv in (["eval", "--task", "mini_kv_retrieval"], ["eval", "--task"], ["eval", "--task", "--data", "x"],
                 ["eval", "--task", "wed", "--task=seqa"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: alignkit eval: ") and "valid: " + ", ".join(
            p.split()[1] for p in registry() if p.startswith("eval ")) in err
    main(["eval", "--task", "mini_kv_retrieval"])
    assert "'mini_kv_retrieval'" in (err := capsys.readouterr().err) and "--tasks NAME" in err
    assert main(["eval", "--task", "mathusereval", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: alignkit eval mathusereval")
    assert main(["eval", "--help"]) == 0
    assert "alignkit eval --task SUB-COMMAND" in capsys.readouterr().out


def test_aliases_are_declared_on_the_models_and_name_real_keys():
    seen = 0
    for cmd in COMMANDS.values():
        cls = load(cmd.config)
        options = {o: fl.key for fl in flags_of(cls) for o in fl.options}
        for alias, key in getattr(cls, "cli_aliases", {}).items():
            assert options[alias] == key
            seen += 1
    assert seen >= 6


def test_precedence_yaml_then_flags_then_overrides(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("k: 3\nn_train: 10\noutput_dir: from-yaml\n")
    cfg, _ = resolve(COMMANDS["demo"], ["--config", str(f), "--k", "5", "k=7", "--out", "from-flag"])
    assert (cfg.k, cfg.n_train, cfg.output_dir) == (7, 10, "from-flag")


def test_bad_flag_values_and_keys_exit_2(tmp_path, capsys):
    assert main(["demo", "--k", "many", "--out", str(tmp_path)]) == 2
    assert "k" in capsys.readouterr().err
    assert main(["demo", "nonsense=1", "--out", str(tmp_path)]) == 2
    assert "unknown key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "compare", "a", "b", "c"])  # one positional too many


def test_library_errors_are_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    assert main(["longreward", "pairs", "--in", str(missing), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and "missing.jsonl" in err[-1] and not any("Traceback" in x for x in err)


# Every shipped config is loaded through its command (the same path as `alignkit CMD --config FILE`).
CONFIG_COMMANDS = [
    ("dpo_", "dpo", []), ("exo_", "dpo", []), ("sft_", "sft", []), ("rm_", "rm", []), ("rl_", "rl", []),
    ("longreward_score", "longreward score", ["--in", "in.jsonl", "--out", "out.jsonl"]),
    ("longreward_", "pipeline longreward", []), ("demo", "demo", []),
    ("prm_label_", "prm label", []), ("prm_", "prm", []), ("bon_", "bon", []),
    ("self_critique_", "pipeline self-critique", []), ("self_reflect_", "pipeline self-reflect", []),
    ("critic_", "critic train", []),
]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_through_its_command(name):
    match = next(((cmd, extra) for prefix, cmd, extra in CONFIG_COMMANDS if name.startswith(prefix)), None)
    assert match is not None, f"configs/{name}: add it to CONFIG_COMMANDS (every shipped config is loaded by a test)"
    cmd, extra = match
    cfg, _ = resolve(COMMANDS[cmd], ["--config", str(ROOT / "configs" / name), *extra])
    assert cfg is not None


def test_demo_yaml_is_the_demo_default():
    from alignkit.config import load_config
    from alignkit.pipelines.demo import DemoConfig

    assert load_config(DemoConfig, ROOT / "configs" / "demo.yaml") == DemoConfig()


def test_no_module_imports_a_cli_module():
    """Only alignkit/cli.py (and __main__) may import a cli module; UserError comes from alignkit.errors."""
    src = ROOT / "src" / "alignkit"
    offenders = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        if rel in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{rel}: {n}" for n in names if n == "alignkit.cli" or n.endswith(".cli")]
    assert offenders == []


def test_top_level_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom alignkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'alignkit --help imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


OUTPUT_SPELLINGS = [  # (command, other required args, old flag, new key): one vocabulary, old flags kept
    ("generate", ["--prompts", "p.jsonl"], "--out", "output_file"),
    ("longreward sample", ["--data", "d"], "--out", "output_file"),
    ("longreward score", ["--in", "s.jsonl"], "--out", "output_file"),
    ("longreward pairs", ["--in", "s"], "--out", "output_file"),
    ("annotate export", [], "--out", "output_file"),
    ("eval build-mini", [], "--out", "output_dir"),
    ("eval textgen", ["--data", "d"], "--output", "output_file"),
    ("eval wed", ["--data", "d"], "--output", "output_file"),
    ("eval seqa", ["--data", "d"], "--output", "output_file"),
    ("rm eval", ["--model", "m", "--data", "d"], "--output", "output_file"),
]


@pytest.mark.parametrize("path, args, old, key", OUTPUT_SPELLINGS, ids=[o[0] for o in OUTPUT_SPELLINGS])
def test_output_location_is_output_dir_or_output_file_and_old_flags_still_work(path, args, old, key):
    from alignkit.config import ConfigError

    new_flag = "--" + key.replace("_", "-")
    by_old, _ = resolve(COMMANDS[path], [*args, old, "x.out"])
    by_new, _ = resolve(COMMANDS[path], [*args, new_flag, "x.out"])
    assert getattr(by_old, key) == getattr(by_new, key) == "x.out" and by_old == by_new
    with pytest.raises(ConfigError, match="old spelling of '" + key + "': give one of them, not both"):
        resolve(COMMANDS[path], [*args, old, "a", new_flag, "b"])
    assert COMMANDS[path].save_to in (key, None)
