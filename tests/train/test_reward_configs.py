"""The shipped reward-model configs load, point at shipped data, and their commands are wired."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, target", [
    ("prm_smollm2.yaml", "alignkit.train.prm:PRMConfig"),
    ("prm_label_smollm2.yaml", "alignkit.pipelines.prm_label:PRMLabelConfig"),
    ("bon_smollm2.yaml", "alignkit.pipelines.best_of_n:BoNConfig"),
])
def test_reward_configs_load(name, target):
    import importlib

    from alignkit.config import load_config

    module, cls = target.split(":")
    cfg = load_config(getattr(importlib.import_module(module), cls), ROOT / "configs" / name)
    data = cfg.data.train if hasattr(cfg.data, "train") else cfg.data
    assert (ROOT / data).is_file(), f"{name}: {data} is not shipped"


def test_commands_are_wired(capsys):
    from alignkit.cli import main, registry

    reg = registry()
    assert {"rm eval", "prm", "prm label", "bon"} <= set(reg)
    assert main(["rm", "--help"]) == 0 and "eval" in capsys.readouterr().out
    assert main(["rm", "eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--model" in out and "length_buckets" in out
    assert main(["prm", "label", "--help"]) == 0 and "rollouts" in capsys.readouterr().out
