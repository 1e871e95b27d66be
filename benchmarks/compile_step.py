"""alignkit DPO steps on short pairs, eager vs ``torch.compile`` of the model's backbone (one mode per run).

    .venv/bin/python benchmarks/compile_step.py --mode eager
    .venv/bin/python benchmarks/compile_step.py --mode compile

The pairs, settings and recipe are ``dpo_vs_trl.py``'s short-pair run (4 pairs per step, max_length
512, fp32), through ``alignkit.train.preference.train_preference``; the only difference is that
``--mode compile`` wraps the backbone's ``forward`` in ``torch.compile(dynamic=True)`` (packed widths
change from step to step). Prints each optimizer step's wall time and loss, so the two runs can be
compared step by step (same losses up to compiled-kernel rounding). Run the two modes one after the
other on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import default_pairs, dpo_overrides

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["eager", "compile"], required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from alignkit.config import load_config
    from alignkit.models import resolve_model_path
    from alignkit.train import preference
    from alignkit.train.loop import Trainer

    torch.set_num_threads(args.threads)
    settings = argparse.Namespace(gradient_checkpointing=False, max_length=512, seed=0, steps=args.steps, batch_size=4,
                                  lr=5e-6, adam_betas=[0.9, 0.999], adam_eps=1e-8, max_grad_norm=1.0,
                                  precision="fp32", beta=0.1)
    orig_init, orig_step = Trainer.__init__, Trainer.train_step

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        if args.mode == "compile":
            backbone = self.model.model  # LlamaModel: the lm-head runs at response positions outside it
            backbone.forward = torch.compile(backbone.forward, dynamic=True)

    def step(self):
        t = time.perf_counter()
        logs = orig_step(self)
        print(f"{args.mode} step {self.step}: {time.perf_counter() - t:6.2f} s, loss {logs['loss']:.6f}", flush=True)
        return logs

    Trainer.__init__, Trainer.train_step = init, step
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in default_pairs(4 * args.steps)))
        overrides = dpo_overrides(settings, resolve_model_path("smollm2-135m-instruct"), str(data), f"{tmp}/out")
        print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} threads, torch {torch.__version__}")
        preference.train_preference(load_config(preference.PreferenceConfig, None, overrides))


if __name__ == "__main__":
    main()
