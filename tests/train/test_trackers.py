"""train.report_to: W&B (offline) and MLflow (local store) get the logged metrics; a missing one is refused."""

import glob
import struct

import pytest
from tests.train.conftest import make_sft, write_jsonl


def _one_step_sft(tmp_path, model_dir, report_to):
    from alignkit.config import load_config
    from alignkit.train.sft import SFTConfig, train_sft

    data = write_jsonl(tmp_path / "sft.jsonl", make_sft(4))
    cfg = load_config(SFTConfig, None, [f"model.name_or_path={model_dir}", f"data.train={data}",
                                        f"train.output_dir={tmp_path / 'run'}", "train.max_steps=1",
                                        "train.batch_size=4", "train.progress=false", f"train.report_to={report_to}"])
    return train_sft(cfg)


def _wandb_history(run_file: str) -> list[dict[str, str]]:
    """History records of an offline .wandb file (LevelDB-log framing of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf, out = open(run_file, "rb").read(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                out.append({i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item})
    return out


def test_wandb_offline_run_has_the_logged_loss(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = _one_step_sft(tmp_path, tiny_model_dir, "[wandb]")
    files = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    history = _wandb_history(files[0])
    assert [float(h["loss"]) for h in history] == pytest.approx([summary["final_loss"]])
    assert history[0]["_step"] == "1"
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_mlflow_local_store_has_the_logged_loss(tmp_path, tiny_model_dir, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = _one_step_sft(tmp_path, tiny_model_dir, "[mlflow,tensorboard]")
    client = mlflow.tracking.MlflowClient((tmp_path / "run" / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("alignkit").experiment_id])
    assert run.info.run_name == "run" and run.data.params["max_steps"] == "1"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, pytest.approx(summary["final_loss"]))]
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_a_tracker_that_is_not_installed_is_refused_naming_the_extra(monkeypatch):
    import importlib.util

    from alignkit.config import load_config
    from alignkit.errors import ConfigError
    from alignkit.train.loop import TrainConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.report_to: mlflow is not installed; pip install 'alignkit\[mlflow\]'"):
        load_config(TrainConfig, None, ["report_to=[tensorboard,mlflow]"])
