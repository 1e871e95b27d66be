"""Options that used to be ignored or crash late are refused at load time with a clear message."""

import pytest
from tests.train.conftest import make_pairs, write_jsonl

from alignkit.config import load_config
from alignkit.errors import ConfigError


@pytest.mark.parametrize("fraction", ["1.0", "1.5", "-0.1"])
def test_eval_fraction_out_of_range_is_a_config_error(fraction):
    from alignkit.train.sft import SFTConfig

    with pytest.raises(ConfigError, match=r"data\.eval_fraction: Input should be"):
        load_config(SFTConfig, None, ["data.train=x.jsonl", f"data.eval_fraction={fraction}"])


def test_epochs_and_max_steps_together_are_refused():
    from alignkit.train.preference import PreferenceConfig

    with pytest.raises(ConfigError, match=r"train: set train.epochs \(2\) or train.max_steps \(5\), not both$"):
        load_config(PreferenceConfig, None, ["data.train=x.jsonl", "train.epochs=2", "train.max_steps=5"])
    # either alone is fine; neither means one epoch
    assert load_config(PreferenceConfig, None, ["data.train=x", "train.max_steps=5"]).train.max_steps == 5
    assert load_config(PreferenceConfig, None, ["data.train=x", "train.epochs=2"]).train.epochs == 2


def test_resolved_config_round_trips(tmp_path):
    """The saved config.yaml must load again (epochs stays null when max_steps is set)."""
    from alignkit.config import dump_config
    from alignkit.train.preference import PreferenceConfig

    cfg = load_config(PreferenceConfig, None, ["data.train=x", "train.max_steps=5"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(PreferenceConfig, tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("loss", ["exo", "dpo_rw"])
def test_beta_r_on_pair_rows_is_refused(tmp_path, loss):
    from alignkit.train.preference import PreferenceConfig, train_preference

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    cfg = load_config(PreferenceConfig, None, [f"data.train={data}", f"loss.type={loss}", "loss.beta_r=0.25",
                                               f"train.output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match=r"loss.beta_r=0.25 has no effect on pair rows"):
        train_preference(cfg)
    assert not (tmp_path / "out").exists()
