"""``alignkit generate`` (prompts JSONL -> completions JSONL) and ``alignkit serve`` (OpenAI-compatible API)."""

from __future__ import annotations

from typing import Literal

from alignkit.commands import Command
from alignkit.generate.options import EngineOptions, engine_from_options


class GenerateConfig(EngineOptions):
    """``alignkit generate``: a JSONL of prompts -> the same rows plus ``completions``."""

    prompts: str
    """Input JSONL; each row has 'prompt' (string or messages)."""
    output_file: str
    """Output JSONL (written atomically)."""
    renamed = {"out": "output_file"}
    n: int = 1
    """Completions per prompt."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = 0
    """Top-k sampling; 0 = off."""
    max_new_tokens: int = 256
    """Most tokens generated per completion."""
    min_new_tokens: int = 0
    """EOS is suppressed before this many tokens."""
    stop: list[str] = []
    """Stop strings (repeat --stop; on the command line \\n and \\t are a newline and a tab); output is cut before them."""
    seed: int | None = None
    """Row i (0-based) is sampled with seed SEED+i."""
    chat_template: bool = True
    """Chat-render string prompts (--no-chat-template: feed them raw, completion style); message lists are always chat-rendered."""

    cli_whole = ("stop",)


class ServeConfig(EngineOptions):
    """``alignkit serve``: an OpenAI-compatible /v1/chat/completions server for a local model."""

    host: str = "127.0.0.1"
    """Bind address (loopback by default; any other address needs an API key)."""
    port: int = 8000
    """TCP port."""
    api_key_env: str | None = None
    """Require 'Authorization: Bearer <key>' with the key read from this environment variable."""
    served_model_name: str | None = None
    """Model id clients use (default: the model)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Larger requests get 413."""
    default_max_tokens: int = 512
    """Used when a request sets no max_tokens."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "warning"
    """uvicorn log level."""
    reward_model: str | None = None
    """Serve POST /v1/rewards/score with this reward-model / PRM directory instead of chat completions."""


def _unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` typed on a command line mean a newline, a tab and a backslash."""
    import re

    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def generate(cfg: GenerateConfig) -> int:
    import re

    from rich.console import Console

    from alignkit.errors import DataError, UserError
    from alignkit.generate.engine import GenerationError, SamplingParams
    from alignkit.generate.jsonl import check_prompt, read_jsonl, write_jsonl_atomic

    if cfg.n > 1 and cfg.temperature == 0.0:
        raise UserError(
            "--n > 1 with --temperature 0 (greedy) would give n identical completions; set --temperature"
        )
    records = read_jsonl(cfg.prompts)
    prompts = []
    for line, row in records:
        where = f"{cfg.prompts}:{line}"
        if "prompt" not in row:
            raise DataError(f"{where}: field 'prompt': missing")
        prompts.append(check_prompt(row["prompt"], where))
        if "completions" in row:
            raise DataError(f"{where}: field 'completions': already present; refusing to overwrite it")
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        n=cfg.n,
        stop=[_unescape(x) for x in cfg.stop],
        min_new_tokens=cfg.min_new_tokens,
    )
    params.validate()
    seeds = None if cfg.seed is None else [cfg.seed + i for i in range(len(prompts))]
    engine = engine_from_options(cfg)
    console = Console(stderr=True)
    console.print(f"generating {len(prompts)} prompts x {cfg.n} with {cfg.model} ({type(engine).__name__})")
    try:
        results = engine.generate(
            prompts, params, apply_chat_template=cfg.chat_template, progress=True, seeds=seeds
        )
    except GenerationError as exc:
        # the engine numbers prompts from 0; name the input line instead
        msg = re.sub(r"^prompt (\d+):", lambda m: f"line {records[int(m.group(1))][0]}:", str(exc))
        raise UserError(f"{cfg.prompts}: {msg}") from None
    out_rows = []
    for (_, row), res in zip(records, results, strict=True):
        out = dict(row)
        out["completions"] = [c.text for c in res.completions]
        out["finish_reasons"] = [c.finish_reason for c in res.completions]
        out_rows.append(out)
    n = write_jsonl_atomic(cfg.output_file, out_rows)
    gen_tokens = sum(len(c.token_ids) for r in results for c in r.completions)
    console.print(f"wrote {n} rows ({gen_tokens} generated tokens) to {cfg.output_file}")
    return 0


def serve(cfg: ServeConfig) -> int:
    import os

    import uvicorn

    from alignkit.errors import UserError
    from alignkit.generate.server import create_app
    from alignkit.httpguard import is_loopback

    api_key = None
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {cfg.api_key_env}: that environment variable is unset or empty")
    if not is_loopback(cfg.host) and api_key is None:
        raise UserError(
            f"refusing to serve on non-loopback host {cfg.host!r} without an API key (--api-key-env)"
        )
    if cfg.reward_model:  # a scoring endpoint instead of chat completions
        from alignkit.generate.reward_server import serve_reward_model

        return serve_reward_model(cfg.reward_model, cfg.host, cfg.port, api_key, cfg.max_body_bytes,
                                  cfg.log_level, device=cfg.device)
    engine = engine_from_options(cfg)
    app = create_app(
        engine,
        model_name=cfg.served_model_name or cfg.model,
        api_key=api_key,
        max_body_bytes=cfg.max_body_bytes,
        default_max_tokens=cfg.default_max_tokens,
    )
    auth = f"Bearer key from ${cfg.api_key_env}" if api_key else "no auth (loopback only)"
    print(
        f"serving {cfg.served_model_name or cfg.model} on http://{cfg.host}:{cfg.port}/v1 ({auth})",
        flush=True,
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    return 0


COMMANDS = [
    Command("generate", "sample completions for a JSONL of prompts (batched, seeded, stop strings)",
            "alignkit.generate.cli:GenerateConfig", "alignkit.generate.cli:generate", save_to="output_file",
            description="Read rows with a 'prompt' (string or chat messages), write the same rows plus "
            "'completions' (n strings) and 'finish_reasons'."),
    Command("serve", "OpenAI-compatible /v1/chat/completions server for a local model",
            "alignkit.generate.cli:ServeConfig", "alignkit.generate.cli:serve"),
]
