"""Helpers shared by the benchmark scripts: generated data, the worker-subprocess harness, the
alignkit/TRL settings both sides share, the matmul peak and the timer.

Scripts run as ``python benchmarks/NAME.py``, so this directory is on ``sys.path`` and they import
``from common import ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PARITY_TOL = 1e-3  # step-0 loss agreement required by the issue (both should be ln 2)


def default_pairs(n: int) -> list[dict]:
    """``n`` TRL-style conversational rows; chosen answers the asked topic, rejected is off-topic.

    Lengths cycle so that some sequences exceed the default max length of 256 tokens and are
    truncated (on both sides), and others are short (so batches carry real padding).
    """
    import pydoc_data.topics as t

    keys = sorted(t.topics)

    def body(key: str) -> tuple[str, list[str]]:
        lines = [ln for ln in t.topics[key].splitlines() if ln.strip() and not set(ln.strip()) <= set("*=-")]
        return lines[0].strip(), " ".join(lines[1:]).split()

    chosen_words = [50, 170, 110, 30, 140, 80, 190, 65]
    rejected_words = [35, 120, 160, 70, 45, 150, 95, 180]
    rows = []
    for i in range(n):
        title, words = body(keys[(7 * i) % len(keys)])
        _, other = body(keys[(7 * i + 31) % len(keys)])
        c, r = chosen_words[i % 8], rejected_words[(i // 8 + i) % 8]
        rows.append({
            "prompt": [{"role": "user", "content": f"In a few sentences, explain the Python topic '{title}'."}],
            "chosen": [{"role": "assistant", "content": " ".join(words[:c])}],
            "rejected": [{"role": "assistant", "content": " ".join(other[:r])}],
        })
    return rows


def doc_text(tok):
    """``cut(start, length)``: ``length`` tokens of CPython's documentation text from token ``start`` (wrapping)."""
    import pydoc_data.topics as t

    corpus = tok(" ".join(" ".join(t.topics[k].split()) for k in sorted(t.topics)), add_special_tokens=False)["input_ids"]

    def cut(start: int, length: int) -> str:
        start %= len(corpus) - length
        return tok.decode(corpus[start:start + length]).strip()

    return cut


def pin_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def time_trainer(timing: dict) -> None:
    """Wrap alignkit's ``Trainer.train``/``train_step`` so ``timing`` gets the start, every step's end
    (wall and CPU seconds) and the peak RSS after each step. The worker process exits after one run."""
    from alignkit.train.loop import Trainer

    orig_train, orig_step = Trainer.train, Trainer.train_step

    def timed_train(self, resume=False):
        timing["train_start"], timing["cpu_start"] = time.perf_counter(), time.process_time()
        timing["rss_train_start_kb"] = maxrss_kb()
        return orig_train(self, resume)

    def timed_step(self):
        logs = orig_step(self)
        timing["step_end"].append(time.perf_counter())
        timing["cpu_end"].append(time.process_time())
        timing["rss_kb"].append(maxrss_kb())
        return logs

    Trainer.train, Trainer.train_step = timed_train, timed_step


def trl_common_args(spec: dict) -> dict:
    """TRL TrainingArguments shared by the comparisons: the same optimizer, schedule and precision as alignkit."""
    a = spec["args"]
    return dict(
        output_dir=spec["output_dir"], seed=a["seed"], data_seed=a["seed"],
        per_device_train_batch_size=a["batch_size"], gradient_accumulation_steps=1, max_steps=a["steps"],
        learning_rate=a["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        optim="adamw_torch", adam_beta1=a["adam_betas"][0], adam_beta2=a["adam_betas"][1],
        adam_epsilon=a["adam_eps"], max_grad_norm=a["max_grad_norm"] or 0.0,
        # fp32 master weights on both sides; bf16 means autocast (alignkit's only bf16 mode).
        bf16=a["precision"] == "bf16", fp16=False, use_cpu=True,
        activation_checkpointing=a["gradient_checkpointing"],  # TRL's default is on; match alignkit's setting
        max_length=a["max_length"], truncation_mode="keep_start",
        train_sampling_strategy="sequential",  # rows are already in alignkit's order
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )


def trl_recorder():
    """A TrainerCallback recording step-end times, CPU times, RSS and logged metrics: (callback, timing, logs)."""
    from transformers import TrainerCallback

    steps_logged: dict[int, dict] = {}
    timing: dict = {"step_end": [], "cpu_end": [], "rss_kb": []}

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            timing["train_start"], timing["cpu_start"] = time.perf_counter(), time.process_time()
            timing["rss_train_start_kb"] = maxrss_kb()

        def on_step_end(self, args, state, control, **kw):
            timing["step_end"].append(time.perf_counter())
            timing["cpu_end"].append(time.process_time())
            timing["rss_kb"].append(maxrss_kb())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                steps_logged[state.global_step] = dict(logs)

    return Recorder(), timing, steps_logged


def run_worker(kind: str, spec: dict, workdir: Path, env: dict, script: str) -> tuple[dict, dict]:
    """Run one worker subprocess of the benchmark ``script`` (``script --worker KIND SPEC``); returns (its result, {wall_s, cpu_s,
    peak_rss_kb}) from the child's own rusage."""
    spec_path, result_path, log_path = (workdir / f"{spec['name']}.{x}" for x in ("spec.json", "result.json", "log"))
    spec = {**spec, "result": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, os.path.abspath(script), "--worker", kind, str(spec_path)]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the max over all children so far.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise RunFailed(f"{spec['name']} exited with {proc.returncode}; last lines of {log_path}:\n" + "\n".join(tail))
    return json.loads(result_path.read_text()), {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                                                 "peak_rss_kb": usage.ru_maxrss}


class RunFailed(RuntimeError):
    pass


def dpo_overrides(a, model: str, data: str, output_dir: str) -> list[str]:
    """alignkit DPO settings of the TRL comparison (dpo_vs_trl.py, compile_step.py)."""
    return [*common_overrides(a, model, data, output_dir), "loss.type=dpo", f"loss.beta={a.beta}",
            "reference.cache=true"]


def common_overrides(a, model: str, data: str, output_dir: str) -> list[str]:
    """alignkit settings shared by the TRL comparisons: model, data policy, optimizer, schedule, logging."""
    return [
        f"model.name_or_path={model}", f"model.gradient_checkpointing={str(a.gradient_checkpointing).lower()}",
        f"data.train={data}", f"data.limits.max_length={a.max_length}",
        f"data.limits.max_prompt_length={a.max_length - 1}",  # TRL has no prompt limit: keep any prompt that fits
        f"train.output_dir={output_dir}", f"train.seed={a.seed}", f"train.max_steps={a.steps}",
        f"train.batch_size={a.batch_size}", "train.grad_accum=1", f"train.lr={a.lr}", "train.weight_decay=0.0",
        f"train.adam_betas=[{a.adam_betas[0]}, {a.adam_betas[1]}]", f"train.adam_eps={a.adam_eps}",
        "train.schedule=constant", "train.warmup_steps=0",
        f"train.max_grad_norm={'null' if a.max_grad_norm is None else a.max_grad_norm}",
        f"train.precision={a.precision}", "train.log_every=1", "train.report_to=[]", "train.progress=false",
    ]


def median_after_first(xs: list[float]) -> float:
    return statistics.median(xs[1:]) if len(xs) > 1 else xs[0]


def matmul_peak(precision: str, threads: int | None = None, reps: int = 8) -> float:
    """TFLOP/s of ``F.linear`` on a 2048 x 576 input with a 1536 x 576 weight (SmolLM2's MLP shape, in
    the (out, in) weight layout every ``nn.Linear`` of the model uses), best of ``reps``.

    The layout matters for bf16 on CPUs without native bf16: ``x @ w.T`` (what the model runs) is ~9x
    slower than fp32 there, while ``x @ b`` with a row-major (576 x 1536) ``b`` falls to a ~70x slower
    path, which would overstate the fraction of the peak a bf16 model reaches."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x, w = torch.randn(2048, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
    return 2 * 2048 * 576 * 1536 / best_seconds(lambda: F.linear(x, w), reps) / 1e12


def best_seconds(fn, reps: int, warmup: bool = True) -> float:
    """Best wall time of ``reps`` calls of ``fn`` (after one untimed call when ``warmup``)."""
    if warmup:
        fn()  # first call: allocations, kernel selection
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def n_params(model_dir: str) -> int:
    """Non-embedding parameters of the model, from its config (no weights loaded)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    h, i, n, kv = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_key_value_heads
    head = h // c.num_attention_heads
    return n * (2 * h * h + 2 * h * kv * head + 3 * h * i)


def fmt_mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MB"


def add_shared_args(p: argparse.ArgumentParser) -> None:
    """Optimizer, determinism, threads and output flags shared by the TRL comparisons."""
    p.add_argument("--adam-betas", type=float, nargs=2, default=[0.9, 0.999])
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--gradient-checkpointing", action="store_true", help="enable on both sides (default: off on both)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads per run")
    p.add_argument("--workdir", default=None, help="keep logs, specs and outputs here (default: a temp dir, removed)")
    p.add_argument("--json", dest="json_out", default=None, help="also write all results to this JSON file")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)


def bench_main(p: argparse.ArgumentParser, a, workers: dict, prefix: str, run) -> int:
    """The tail of a TRL comparison's ``main`` after its own argument checks: as a worker subprocess
    (``--worker KIND SPEC``) run ``workers[KIND](spec)`` and write its result; otherwise refuse without TRL
    (exit 2), resolve ``--model`` (default: the embedded model) and return ``run(a, workdir, model)`` in
    ``--workdir`` or in a temporary directory removed afterwards."""
    import shutil
    import tempfile

    if a.worker:
        kind, spec_path = a.worker
        spec = json.loads(Path(spec_path).read_text())
        Path(spec["result"]).write_text(json.dumps(workers[kind](spec)))
        return 0
    try:
        import trl  # noqa: F401
    except ImportError:
        p.error("TRL is not installed: .venv/bin/pip install -c constraints.txt '.[bench]'")
    from alignkit.models import DEFAULT_MODEL, resolve_model_path

    workdir = Path(a.workdir or tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run(a, workdir, resolve_model_path(a.model or DEFAULT_MODEL))
    finally:
        if a.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
