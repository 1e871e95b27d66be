import pytest

from alignkit.config import ConfigError, StrictModel, apply_overrides, load_config


class Inner(StrictModel):
    lr: float = 1e-5
    steps: int = 3


class Outer(StrictModel):
    train: Inner = Inner()
    name: str = "x"


def test_yaml_floats_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e-6\nname: y\n")
    cfg = load_config(Outer, f, ["train.steps=7"])
    assert cfg.train.lr == 1e-6 and cfg.train.steps == 7 and cfg.name == "y"


def test_duplicate_key_names_file_and_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e-6\n  lr: 2e-6\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: duplicate key 'lr' \(first defined on line 2\)"):
        load_config(Outer, f)


def test_unknown_key_and_wrong_type(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  stepz: 1\n  lr: fast\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, f)
    msg = str(exc.value)
    assert "train.stepz: unknown key" in msg
    assert "train.lr: Input should be a valid number" in msg and "'fast'" in msg


def test_override_requires_equals():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["train.lr"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")


# ------------------------------------------------------------------ declared old spellings (renamed)
def _renamed_model():
    from pydantic import Field

    from alignkit.config import Renamed

    class Sec(StrictModel):
        output_dir: str = "runs/x"
        """Where outputs go."""
        report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
        """Trackers."""
        renamed = {"out": "output_dir", "tensorboard": Renamed("report_to", ((True, ["tensorboard"]), (False, [])))}

    class Top(StrictModel):
        sec: Sec = Field(default_factory=Sec)
        """A section."""

    return Top


def test_an_old_spelling_loads_and_means_the_same(tmp_path):
    top = _renamed_model()
    path = tmp_path / "c.yaml"
    path.write_text("sec:\n  out: runs/a\n  tensorboard: false\n")
    old = load_config(top, path)
    new = load_config(top, None, ["sec.output_dir=runs/a", "sec.report_to=[]"])
    assert old == new and old.sec.output_dir == "runs/a" and old.sec.report_to == []
    assert load_config(top, None, ["sec.tensorboard=true"]).sec.report_to == ["tensorboard"]
    assert "out" not in old.model_dump()["sec"]  # the resolved config is saved in the new spelling


@pytest.mark.parametrize("overrides, message", [
    (["sec.out=a", "sec.output_dir=b"], "'out' is the old spelling of 'output_dir': give one of them, not both"),
    (["sec.tensorboard=true", "sec.report_to=[]"], "'tensorboard' is the old spelling of 'report_to'"),
    (["sec.tensorboard=1"], "'tensorboard' (the old spelling of 'report_to'): expected one of true, false, got 1"),
])
def test_both_spellings_or_an_unmapped_old_value_is_an_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(_renamed_model(), None, overrides)
    assert message in str(err.value) and "sec:" in str(err.value)


def test_old_spellings_are_listed_with_the_fields():
    from alignkit.config import describe_fields

    rows = {k: d for k, _, d in describe_fields(_renamed_model())}
    assert "Old spelling of ``sec.output_dir``" in rows["sec.out"]
    assert '``tensorboard: false`` = ``report_to: []``' in rows["sec.tensorboard"]


def test_a_renamed_entry_must_name_a_field():
    from alignkit.config import Renamed

    with pytest.raises(TypeError, match="must map an unused key to a field"):
        class Bad(StrictModel):
            a: int = 1
            renamed = {"b": Renamed("c")}


def test_train_tensorboard_is_a_declared_alias_of_report_to():
    """``train.tensorboard`` was removed without an alias (02f58cb); configs that set it load again."""
    from alignkit.train.loop import TrainConfig

    assert TrainConfig.model_validate({"tensorboard": True}).report_to == ["tensorboard"]
    assert TrainConfig.model_validate({"tensorboard": False}).report_to == []
    with pytest.raises(ValueError, match="give one of them, not both"):
        TrainConfig.model_validate({"tensorboard": False, "report_to": []})


# ------------------------------------------------------------------ the one precision type
@pytest.mark.parametrize("given, read", [("auto", "auto"), ("fp32", "fp32"), ("bf16", "bf16"),
                                         ("float32", "fp32"), ("bfloat16", "bf16")])
def test_every_precision_field_reads_the_same_values(given, read):
    """Training ``precision`` and inference ``dtype`` fields share one type: same values, same old spellings."""
    from alignkit.evals.mathusereval import MathUserEvalConfig
    from alignkit.evals.runner import EvalConfig
    from alignkit.evals.trajectory import TrajectoryConfig
    from alignkit.generate.options import EngineOptions
    from alignkit.judge.client import JudgeConfig
    from alignkit.train.loop import TrainConfig

    assert TrainConfig.model_validate({"precision": given}).precision == read
    for cls, extra in ((EngineOptions, {}), (JudgeConfig, {}), (EvalConfig, {"model": "m"}),
                       (MathUserEvalConfig, {"data": "d.jsonl"}), (TrajectoryConfig, {"checkpoints": ["a"]})):
        assert cls.model_validate({**extra, "dtype": given}).dtype == read, cls.__name__


def test_fp16_is_refused_everywhere():
    from alignkit.generate.options import EngineOptions
    from alignkit.train.loop import TrainConfig

    for cls, key in ((TrainConfig, "precision"), (EngineOptions, "dtype")):
        with pytest.raises(ValueError):
            cls.model_validate({key: "float16"})


def test_evals_follow_precision_auto(monkeypatch):
    """Evals used to hard-code float32; their default is ``auto``, resolved like training's."""
    import alignkit.precision as precision
    from alignkit.evals.runner import EvalConfig, _weights_dtype

    monkeypatch.delenv("ALIGNKIT_PRECISION_PROBE", raising=False)  # the probe itself is what is faked here
    cfg = EvalConfig.model_validate({"model": "m"})
    assert cfg.dtype == "auto"
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: (True, "probe says native"))
    assert _weights_dtype(cfg) == "bfloat16"
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: (False, "probe says emulated"))
    assert _weights_dtype(cfg) == "float32"
    assert _weights_dtype(EvalConfig.model_validate({"model": "m", "dtype": "bf16"})) == "bfloat16"


def test_old_spellings_appear_in_the_generated_help():
    from alignkit.commands import keys_epilog
    from alignkit.train.preference import PreferenceConfig

    epilog = keys_epilog(PreferenceConfig)
    assert "train.tensorboard" in epilog and "Old spelling of ``train.report_to``" in epilog


def test_data_policy_is_the_old_spelling_of_data_limits():
    """``policy`` means the model being trained; the degenerate-row settings are ``data.limits``."""
    from alignkit.train.reward_eval import RMEvalConfig
    from alignkit.train.sft import SFTConfig

    old = load_config(SFTConfig, None, ["data.train=x.jsonl", "data.policy.max_length=64"])
    new = load_config(SFTConfig, None, ["data.train=x.jsonl", "data.limits.max_length=64"])
    assert old == new and new.data.limits.max_length == 64
    with pytest.raises(ConfigError, match="'policy' is the old spelling of 'limits'"):
        load_config(SFTConfig, None, ["data.train=x.jsonl", "data.policy.max_length=64", "data.limits.max_length=8"])
    rm = RMEvalConfig.model_validate({"model": "m", "data": "d", "policy": {"max_length": 64}})
    assert rm.limits.max_length == 64
