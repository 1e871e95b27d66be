"""``precision: auto``: bf16 only where the capability probe finds native bf16 matmuls."""

import json
import os

import pytest


def _flags(monkeypatch, flags):
    from alignkit import precision

    monkeypatch.delenv(precision.PROBE_ENV, raising=False)  # these tests exercise the probe itself
    monkeypatch.setattr(precision, "_cpu_flags", lambda: None if flags is None else set(flags))


def test_cpu_without_native_bf16_picks_fp32(monkeypatch):
    from alignkit.precision import resolve_dtype, resolve_precision

    _flags(monkeypatch, ["sse4_2", "avx2", "fma", "avx512f"])  # AVX512 alone is not bf16
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == "fp32" and "amx_bf16" in choice.reason
    assert resolve_dtype("auto", "cpu") == "float32"


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16", "bf16"])
def test_cpu_with_native_bf16_picks_bf16(monkeypatch, flag):
    from alignkit.precision import resolve_dtype, resolve_precision

    _flags(monkeypatch, ["avx2", flag])
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == "bf16" and flag in choice.reason
    assert resolve_dtype("auto", "cpu") == "bfloat16"


def test_unreadable_flags_and_explicit_requests(monkeypatch):
    from alignkit.precision import resolve_dtype, resolve_precision

    _flags(monkeypatch, None)
    assert resolve_precision("auto", "cpu").precision == "fp32"
    _flags(monkeypatch, ["amx_bf16"])
    assert resolve_precision("fp32", "cpu").as_dict() == {"precision": "fp32", "requested": "fp32",
                                                          "reason": "requested explicitly"}
    _flags(monkeypatch, [])
    assert resolve_precision("bf16", "cpu").precision == "bf16"  # explicit wins over the probe
    assert resolve_dtype("float16", "cpu") == "float16"
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("forced, native_flags", [("bf16", ["avx2"]), ("fp32", ["amx_bf16"])])
def test_probe_can_be_forced_either_way(monkeypatch, forced, native_flags):
    from alignkit import precision
    from alignkit.precision import resolve_dtype, resolve_precision

    _flags(monkeypatch, native_flags)  # the machine says the opposite of what is forced
    monkeypatch.setenv(precision.PROBE_ENV, forced)
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == forced and precision.PROBE_ENV in choice.reason
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if forced == "bf16" else "float32")
    other = "fp32" if forced == "bf16" else "bf16"
    assert resolve_precision(other, "cpu").precision == other  # explicit requests are never forced
    monkeypatch.setenv(precision.PROBE_ENV, "auto")
    assert resolve_precision("auto", "cpu").precision == ("bf16" if "amx_bf16" in native_flags else "fp32")
    monkeypatch.setenv(precision.PROBE_ENV, "fp16")
    with pytest.raises(ValueError, match="ALIGNKIT_PRECISION_PROBE must be auto, fp32 or bf16"):
        resolve_precision("auto", "cpu")


@pytest.mark.parametrize("native", [False, True])
def test_recipe_saves_choice_and_reason_in_summary(tmp_path, monkeypatch, capsys, tokenizer, native):
    from alignkit.config import load_config
    from alignkit.models import tiny_random_causal_lm
    from alignkit.train.sft import SFTConfig, train_sft

    _flags(monkeypatch, ["amx_bf16"] if native else ["avx2"])
    model, tok = tiny_random_causal_lm(tokenizer, hidden=16, layers=1, heads=2)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    rows = [{"prompt": f"Say {i}.", "completion": f"{i} {i}"} for i in range(2)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(SFTConfig, None, [f"model.name_or_path={tmp_path / 'm'}", f"data.train={tmp_path / 'd.jsonl'}",
                                        f"train.output_dir={tmp_path / 'out'}", "train.max_steps=1",
                                        "train.progress=false", "train.report_to=[]"])
    assert cfg.train.precision == "auto"  # the default
    summary = train_sft(cfg)
    want = "bf16" if native else "fp32"
    assert summary["precision"]["precision"] == want and summary["precision"]["requested"] == "auto"
    saved = json.loads(open(os.path.join(summary["output_dir"], "summary.json")).read())
    assert saved["precision"] == summary["precision"]
    assert f"precision: {want} (auto: " in capsys.readouterr().out
