"""Atomic, complete checkpoints and the final Hugging Face export.

A checkpoint holds weights, optimizer, scheduler and RNG states (through ``accelerate``'s
``save_state``, which also handles sharded FSDP/DeepSpeed states), plus the data position and
the resolved config in ``trainer_state.json``. It is written to a temporary directory, fsynced
and renamed into place, so a crash never leaves a half-written ``step-N`` behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from alignkit.atomic import fsync_tree, replace_dir, write_atomic

CKPT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, keep: int) -> Path:
    """Write ``checkpoints/step-N`` atomically; keep the newest ``keep`` checkpoints."""
    root = Path(output_dir) / CKPT_DIR
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
        replace_dir(tmp, final)
        for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore model/optimizer/scheduler/RNG from ``path``; return its trainer state."""
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())


def resume_checkpoint(accelerator, output_dir: str | Path, path: Path | None = None) -> dict:
    """``--resume``: restore the newest complete checkpoint under ``output_dir`` (or ``path``); its trainer state."""
    path = path or latest_checkpoint(output_dir)
    if path is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {Path(output_dir) / CKPT_DIR}")
    return load_checkpoint(accelerator, path)


METRICS_FILE = "metrics.jsonl"


def start_metrics(accelerator, output_dir: str | Path, resumed_step: int | None) -> None:
    """Start a run's ``metrics.jsonl`` (main process): a fresh run (``resumed_step`` None) starts an empty log; a
    resumed one keeps the lines of steps up to ``resumed_step`` as they are and appends after them. Lines the
    interrupted run logged after that checkpoint are dropped (the resumed run logs those steps again), and so is
    a line torn by a kill in mid-write, so the log ends equal to an uninterrupted run's."""
    path = Path(output_dir) / METRICS_FILE
    if not accelerator.is_main_process or not path.exists():
        return
    if resumed_step is None:
        path.unlink()
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [x for x in lines if _logged_step(x) is not None and _logged_step(x) <= resumed_step]
    kept = [x if x.endswith("\n") else x + "\n" for x in kept]
    if kept != lines:
        write_atomic(path, "".join(kept))


def _logged_step(line: str) -> int | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:  # torn by a kill in mid-write
        return None
    return row.get("step") if isinstance(row, dict) else None


def export_model(accelerator, prepared, tokenizer, output_dir: str | Path, merge_lora: bool = True) -> None:
    """Save the trained model as a Hugging Face checkpoint in ``output_dir`` (main process writes).

    ``prepared`` is the module the loop trained (a forward wrapper holding the HF model as
    ``.model``, possibly wrapped by DDP/FSDP/DeepSpeed); its full state dict is gathered through
    accelerate so sharded runs export complete weights. LoRA models are saved merged (loadable
    with ``from_pretrained``) with their adapter under ``adapter/``. Files are written to a
    temporary directory and then moved into place.
    """
    state = accelerator.get_state_dict(prepared)  # collective under FSDP / ZeRO-3: every rank calls it
    hf_model = accelerator.unwrap_model(prepared).model
    if not accelerator.is_main_process:
        return
    state = {k.removeprefix("model."): v for k, v in state.items()}
    out = Path(output_dir)
    tmp = out / ".export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(hf_model, "peft_config"):
        hf_model.save_pretrained(tmp / "adapter")
        if merge_lora:
            hf_model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    else:
        hf_model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    fsync_tree(tmp)
    for item in tmp.iterdir():
        dest = out / item.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(item, dest)
    tmp.rmdir()


def checkpoint_to_hf(step_dir: str | Path, out_dir: str | Path) -> Path:
    """Export a training checkpoint (``<run>/checkpoints/step-N``) as a Hugging Face model directory.

    The weights are the wrapped model's (``model.safetensors``, keys prefixed ``model.``); the model
    class, tokenizer and chat template come from the base model named in the run's ``config.yaml``
    (``model.name_or_path``). LoRA runs are refused: their checkpoints hold an adapter, not a model.
    """
    import yaml

    from alignkit.models import load_causal_lm, load_tokenizer

    step_dir, out = Path(step_dir), Path(out_dir)
    run_config = step_dir.parent.parent / "config.yaml"
    weights = step_dir / "model.safetensors"
    if not (step_dir / STATE_FILE).is_file() or not weights.is_file() or not run_config.is_file():
        raise FileNotFoundError(
            f"{step_dir}: not a training checkpoint (needs {STATE_FILE}, model.safetensors and the run's "
            f"{run_config}) nor a model directory with config.json"
        )
    model_cfg = (yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}).get("model") or {}
    if model_cfg.get("lora"):
        raise ValueError(f"{step_dir}: a LoRA run's checkpoint holds an adapter; evaluate its exported model instead")
    from safetensors.torch import load_file

    state = {k.removeprefix("model."): v for k, v in load_file(str(weights)).items()}
    name = model_cfg.get("name_or_path")
    model = load_causal_lm(name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise ValueError(f"{step_dir}: weights do not fit {name} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(name).save_pretrained(out)
    return out
