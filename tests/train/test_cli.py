"""The training commands through the real CLI: exact error texts, template check, data parallel, a real run."""

import json
import math
import os
import subprocess
import sys

import pytest
from tests.train.conftest import make_pairs, write_jsonl

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
QUIET = ["train.progress=false", "train.report_to=[]"]


def alignkit(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture()
def cli(capsys):
    """The real `alignkit` entry point in-process (same parser, handlers and stderr as the console script)."""
    from alignkit.cli import main

    def run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return _Result(code, out.out, out.err)

    return run


def _good(tmp_path):
    return json.dumps(make_pairs(1)[0])


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", "chosen": "b", "rejected": }', ":2: invalid JSON: Expecting value (column 44)"),
        ('{"prompt": "a", "chosen": "b"}', ":2: field 'rejected': missing"),
        ('{"prompt": "a", "chosen": ["b"], "rejected": "c"}', ":2: field 'chosen[0]': expected an object with 'role' and 'content'"),
        ('{"prompt": 7, "chosen": "b", "rejected": "c"}', ":2: field 'prompt': expected a string or a list of messages, got int"),
        (b'{"prompt": "caf\xe9", "chosen": "b", "rejected": "c"}', ":2: not valid UTF-8 (byte 0xe9 at column 16)"),
    ],
)
def test_bad_input_exact_error(tmp_path, tiny_model_dir, line, message, cli):
    f = tmp_path / "bad.jsonl"
    first = json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}).encode()
    f.write_bytes(first + b"\n" + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    out = tmp_path / "out"
    r = cli("dpo", f"model.name_or_path={tiny_model_dir}", f"data.train={f}", f"train.output_dir={out}", *QUIET)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {f}{message}"
    assert not out.exists()  # nothing written for bad input


def test_empty_completion_policy_error_through_cli(tmp_path, tiny_model_dir, cli):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                           {"prompt": "a", "chosen": "   ", "rejected": "c"}])
    r = cli("dpo", f"model.name_or_path={tiny_model_dir}", f"data.train={f}",
                 "data.policy.on_empty_completion=error", f"train.output_dir={tmp_path / 'o'}", *QUIET)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "error: row 2: empty completion (policy: error)"


def test_config_errors_through_cli(tmp_path, cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train: x.jsonl\nloss:\n  type: dpo\n  betta: 0.1\ntrain:\n  lr: 1e-6\n  lr: 2e-6\n")
    r = cli("dpo", "--config", str(cfg))
    assert r.returncode == 2 and f"error: {cfg}:8: duplicate key 'lr' (first defined on line 7)" in r.stderr
    cfg.write_text("data:\n  train: x.jsonl\nloss:\n  type: dpo\n  betta: 0.1\n")
    r = cli("dpo", "--config", str(cfg))
    assert r.returncode == 2 and "loss.dpo.betta: unknown key" in r.stderr


def test_check_template_cli(tmp_path, cli):
    r = cli("check-template")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4/4 prompts: training render == inference render" in r.stdout
    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(3))
    r = cli("check-template", "--data", data)
    assert r.returncode == 0 and "3/3 prompts" in r.stdout


# fp32: exact up to summation order. bf16 (autocast matmuls, fp32 master weights): other batch shapes per
# process change each gradient entry by a few bf16 ulps; one Adam step with eps=1e-2 moves by at most
# lr*r/4 for a relative gradient error r (tests/train/test_recipes.py), so 2 steps at lr=1e-3 with r = 32
# ulps allow 2 * 1e-3 * 32 * 2^-8 / 4 = 6.3e-5 on the weights, and the loss (~ln 2) 4 ulps of itself.
DP_TOL = {"fp32": {"weights": 1e-6, "loss": 1e-6},
          "bf16": {"weights": 2 * 1e-3 * 32 * 2**-8 / 4, "loss": 4 * 2**-8 * math.log(2)}}


@pytest.mark.slow  # two processes (torchrun): an integration test for `make test`, not the fast tier
@pytest.mark.precision_sensitive
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_process_data_parallel_equals_one_process(tmp_path, tiny_model_dir, precision):
    """torchrun, 2 CPU processes with gloo, batch 2 each == 1 process with batch 4 (bf16: within DP_TOL)."""
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(8))
    common = [f"model.name_or_path={tiny_model_dir}", f"data.train={data}", "train.max_steps=2", "train.lr=1e-3",
              "train.adam_eps=1e-2", "train.max_grad_norm=null", f"train.precision={precision}", *QUIET]
    env = {**ENV, "ALIGNKIT_HOME": str(tmp_path / "home")}
    one = alignkit("dpo", *common, "train.batch_size=4", f"train.output_dir={tmp_path / 'one'}", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    port = "29531" if precision == "fp32" else "29533"
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", port, "-m", "alignkit", "dpo",
                          *common, "train.batch_size=2", f"train.output_dir={tmp_path / 'two'}"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s1["precision"]["precision"] == s2["precision"]["precision"] == precision
    assert s2["steps"] == 2 and abs(s1["final_loss"] - s2["final_loss"]) < DP_TOL[precision]["loss"]
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < DP_TOL[precision]["weights"]


@pytest.mark.slow
def test_real_dpo_on_embedded_model(tmp_path):
    """A short real run of `alignkit dpo` on SmolLM2-135M through the CLI; the export loads with transformers."""
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(6))
    out = tmp_path / "run"
    r = alignkit("dpo", f"data.train={data}", "data.eval_fraction=0.34", f"train.output_dir={out}",
                 "train.max_steps=2", "train.batch_size=2", "train.precision=bf16", "nll_weight=0.1", *QUIET)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["eval_after"]["n"] == 2
    assert summary["data"]["kept"] == 4
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.num_parameters() > 100e6
    assert (out / "config.yaml").is_file() and (out / "checkpoints").is_dir()
    assert (out / "tensorboard").is_dir() is False  # disabled above
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [1, 2] and all("rewards/margins" in x for x in logged)
