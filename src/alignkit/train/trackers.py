"""Experiment trackers the training loop reports metrics to (``train.report_to``).

* ``tensorboard`` (default): event files under ``<output_dir>/tensorboard``.
* ``wandb`` (extra ``alignkit[wandb]``): a Weights & Biases run named after the output directory,
  in project ``$WANDB_PROJECT`` (default ``alignkit``), files under ``<output_dir>/wandb``. It
  honours ``WANDB_MODE`` (``offline`` keeps everything local; ``wandb sync`` uploads it later).
* ``mlflow`` (extra ``alignkit[mlflow]``): an MLflow run named after the output directory, in
  experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``alignkit``), at ``$MLFLOW_TRACKING_URI`` or, when
  unset, in a local file store ``<output_dir>/mlruns`` (MLflow 3 keeps that store in maintenance
  mode behind ``MLFLOW_ALLOW_FILE_STORE``, which alignkit sets for its own default store only).

A requested tracker whose package is missing is refused when the config is loaded, naming what
to install; nothing falls back silently.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

TrackerName = Literal["tensorboard", "wandb", "mlflow"]
# name -> (module to import, what to pip install: tensorboard is a dependency of alignkit itself)
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "alignkit[wandb]"),
             "mlflow": ("mlflow", "alignkit[mlflow]")}


def check_installed(names: list[str]) -> list[str]:
    """Refuse trackers whose package is not installed (called by the config validator)."""
    for name in names:
        module, requirement = _PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"train.report_to: {name} is not installed; pip install '{requirement}' "
                             f"(or remove {name} from train.report_to)")
    if len(set(names)) != len(names):
        raise ValueError(f"train.report_to: {names} names a tracker twice")
    return names


class _TensorBoard:
    def __init__(self, out: Path, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(str(out / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self._w.add_scalar(k, v, step)

    def close(self) -> None:
        self._w.close()


class _WandB:
    def __init__(self, out: Path, config: dict[str, Any]):
        import wandb

        (out / "wandb").mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "alignkit"), name=out.name,
                               dir=str(out), config=config, reinit="create_new")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


class _MLflow:
    def __init__(self, out: Path, config: dict[str, Any]):
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out / "mlruns").resolve().as_uri()
        self._client = mlflow.tracking.MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "alignkit")
        exp = self._client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self._client.create_experiment(name)
        self._run_id = self._client.create_run(exp_id, run_name=out.name).info.run_id
        self.uri = uri
        for k, v in _flatten(config).items():
            self._client.log_param(self._run_id, k, str(v)[:500])

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self._client.log_metric(self._run_id, k, v, step=step)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_TRACKERS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Trackers:
    """The requested trackers, fed together: ``log(metrics, step)`` and ``close()``."""

    def __init__(self, names: list[str], out: Path, config: dict[str, Any] | None = None):
        self._all = [_TRACKERS[n](Path(out), config or {}) for n in names]

    def log(self, logs: dict[str, Any], step: int) -> None:
        # numbers only; a NaN (e.g. the mean reward of a step whose rewards all failed) stays in metrics.jsonl
        metrics = {k: float(v) for k, v in logs.items()
                   if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        for t in self._all:
            t.log(metrics, step)

    def close(self) -> None:
        for t in self._all:
            t.close()


def log_metrics(out: Path, logs: dict[str, Any], trackers: Trackers | None) -> None:
    """Append one row to ``out/metrics.jsonl`` and send it to the trackers (main process only)."""
    with open(Path(out) / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(logs) + "\n")
    if trackers is not None:
        trackers.log(logs, logs["step"])
