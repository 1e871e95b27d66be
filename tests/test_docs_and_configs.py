"""Every shipped config loads; the documented config reference matches the code."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAIN_CONFIGS = {
    "dpo_": "alignkit.train.preference:PreferenceConfig",
    "exo_": "alignkit.train.preference:PreferenceConfig",
    "sft_": "alignkit.train.sft:SFTConfig",
    "rm_": "alignkit.train.reward:RMConfig",
    "rl_": "alignkit.train.rl:RLConfig",
}


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_config_loads(path):
    import importlib

    from alignkit.config import load_config

    prefix = next((k for k in TRAIN_CONFIGS if path.startswith(k)), None)
    if prefix is None:
        pytest.skip(f"{path} belongs to another command; its own tests load it")
    module, cls = TRAIN_CONFIGS[prefix].split(":")
    cfg = load_config(getattr(importlib.import_module(module), cls), ROOT / "configs" / path)
    assert (ROOT / cfg.data.train).is_file(), f"{path}: data.train {cfg.data.train} is not shipped"


def test_accelerate_profiles_parse():
    import yaml

    for p in (ROOT / "configs" / "accelerate").glob("*.yaml"):
        cfg = yaml.safe_load(p.read_text())
        assert cfg["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED", "MULTI_CPU"}, p


def test_training_doc_reference_is_current():
    from alignkit.train.cli import config_reference_markdown

    assert config_reference_markdown() in (ROOT / "docs" / "training.md").read_text(), (
        "docs/training.md is stale: regenerate its 'Config reference' from alignkit.train.cli.config_reference_markdown()"
    )


def test_rl_doc_reference_is_current():
    from alignkit.train.cli import config_reference_markdown

    assert config_reference_markdown(("rl",)) in (ROOT / "docs" / "rl.md").read_text(), (
        "docs/rl.md is stale: regenerate its 'Config reference' from config_reference_markdown(('rl',))"
    )


def test_tracker_install_hints_name_real_packages(monkeypatch):
    """The refusal of a missing tracker names an install that exists: a declared extra or a dependency."""
    import importlib.util
    import re

    from alignkit.train import trackers

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"])
    deps = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0] for d in project["dependencies"]}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    for name in ("tensorboard", "wandb", "mlflow"):
        with pytest.raises(ValueError) as exc:
            trackers.check_installed([name])
        target = re.search(r"pip install '([^']+)'", str(exc.value)).group(1)
        extra = re.fullmatch(r"alignkit\[(\w+)\]", target)
        assert (extra.group(1) in extras) if extra else (target in deps), f"{name}: {exc.value}"
