"""``alignkit generate`` (prompts JSONL -> completions JSONL) and ``alignkit serve`` (OpenAI-compatible API)."""

from __future__ import annotations

import argparse


def _engine_args(p: argparse.ArgumentParser) -> None:
    from alignkit.models import DEFAULT_MODEL

    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model name or HF directory (default: {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "hf", "vllm"],
        default="auto",
        help="auto: vLLM when installed and a GPU is present, else HF; vllm is refused without them",
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cpu for HF)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences decoded together (default 8)")


def _make_engine(args: argparse.Namespace):
    from alignkit.cli import UserError
    from alignkit.generate.engine import GenerationError, make_engine
    from alignkit.models import ModelError

    kw = {"dtype": args.dtype, "batch_size": args.batch_size}
    if args.device is not None:
        kw["device"] = args.device
    try:
        return make_engine(args.model, backend=args.backend, **kw)
    except (GenerationError, ModelError) as exc:
        raise UserError(str(exc)) from None


def _unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` typed on a command line mean a newline, a tab and a backslash."""
    import re

    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _cmd_generate(args: argparse.Namespace) -> int:
    import re

    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.generate.engine import GenerationError, SamplingParams
    from alignkit.generate.jsonl import RecordError, check_prompt, read_jsonl, write_jsonl_atomic

    if args.n > 1 and args.temperature == 0.0:
        raise UserError(
            "--n > 1 with --temperature 0 (greedy) would give n identical completions; set --temperature"
        )
    try:
        records = read_jsonl(args.prompts)
        prompts = []
        for line, row in records:
            where = f"{args.prompts}:{line}"
            if "prompt" not in row:
                raise RecordError(f"{where}: field 'prompt': missing")
            prompts.append(check_prompt(row["prompt"], where))
            if "completions" in row:
                raise RecordError(f"{where}: field 'completions': already present; refusing to overwrite it")
    except RecordError as exc:
        raise UserError(str(exc)) from None
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        n=args.n,
        stop=[_unescape(x) for x in args.stop or []],
        min_new_tokens=args.min_new_tokens,
    )
    try:
        params.validate()
    except GenerationError as exc:
        raise UserError(str(exc)) from None
    seeds = None if args.seed is None else [args.seed + i for i in range(len(prompts))]
    engine = _make_engine(args)
    console = Console(stderr=True)
    console.print(f"generating {len(prompts)} prompts x {args.n} with {args.model} ({type(engine).__name__})")
    try:
        results = engine.generate(
            prompts, params, apply_chat_template=not args.no_chat_template, progress=True, seeds=seeds
        )
    except GenerationError as exc:
        # the engine numbers prompts from 0; name the input line instead
        msg = re.sub(r"^prompt (\d+):", lambda m: f"line {records[int(m.group(1))][0]}:", str(exc))
        raise UserError(f"{args.prompts}: {msg}") from None
    out_rows = []
    for (_, row), res in zip(records, results, strict=True):
        out = dict(row)
        out["completions"] = [c.text for c in res.completions]
        out["finish_reasons"] = [c.finish_reason for c in res.completions]
        out_rows.append(out)
    n = write_jsonl_atomic(args.out, out_rows)
    gen_tokens = sum(len(c.token_ids) for r in results for c in r.completions)
    console.print(f"wrote {n} rows ({gen_tokens} generated tokens) to {args.out}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from alignkit.cli import UserError
    from alignkit.generate.server import create_app, is_loopback

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty")
    if not is_loopback(args.host) and api_key is None:
        raise UserError(
            f"refusing to serve on non-loopback host {args.host!r} without an API key (--api-key-env)"
        )
    engine = _make_engine(args)
    app = create_app(
        engine,
        model_name=args.served_model_name or args.model,
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        default_max_tokens=args.default_max_tokens,
    )
    auth = f"Bearer key from ${args.api_key_env}" if api_key else "no auth (loopback only)"
    print(
        f"serving {args.served_model_name or args.model} on http://{args.host}:{args.port}/v1 ({auth})",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="sample completions for a JSONL of prompts (batched, seeded, stop strings)",
        description="Read rows with a 'prompt' (string or chat messages), write the same rows plus "
        "'completions' (n strings) and 'finish_reasons'.",
    )
    _engine_args(p)
    p.add_argument("--prompts", required=True, help="input JSONL; each row has 'prompt' (string or messages)")
    p.add_argument("--out", required=True, help="output JSONL (written atomically)")
    p.add_argument("--n", type=int, default=1, help="completions per prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument(
        "--stop",
        action="append",
        help="stop string (repeatable; \\n and \\t are a newline and a tab); output is cut before it",
    )
    p.add_argument("--seed", type=int, default=None, help="row i (0-based) is sampled with seed SEED+i")
    p.add_argument(
        "--no-chat-template",
        action="store_true",
        help="feed string prompts raw (completion style); message lists are always chat-rendered",
    )
    p.set_defaults(func=_cmd_generate)

    s = sub.add_parser("serve", help="OpenAI-compatible /v1/chat/completions server for a local model")
    _engine_args(s)
    s.add_argument(
        "--host", default="127.0.0.1", help="bind address (default loopback; others need an API key)"
    )
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require 'Authorization: Bearer <key>' with the key read from this environment variable",
    )
    s.add_argument("--served-model-name", default=None, help="model id clients use (default: --model)")
    s.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger requests get 413")
    s.add_argument("--default-max-tokens", type=int, default=512, help="when a request sets no max_tokens")
    s.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    s.set_defaults(func=_cmd_serve)
