"""Every shipped config loads; the docs are true: the config reference matches the code, every documented
command parses, the README layout matches the tree, every committed experiment result says how to rerun it."""

import re
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


# ---------------------------------------------------------------- every documented command line parses
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "shell", "console"}
SHELL_STOPS = {">", ">>", "2>", "<", "|", "&", "&&", "||", ";"}


def _shell_words(command: str) -> list[str] | None:
    """The words of a shell command as bash splits them (quotes, backslashes, ``#`` comments that start a
    word); None while a quote is still open."""
    words: list[str] = []
    word, quote, in_word, i = "", None, False, 0
    while i < len(command):
        c = command[i]
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and command[i + 1:i + 2] in ('"', "\\", "$", "`"):
                word, i = word + command[i + 1], i + 1
            else:
                word += c
        elif c in "'\"":
            quote, in_word = c, True
        elif c == "\\" and i + 1 < len(command):
            word, i, in_word = word + command[i + 1], i + 1, True
        elif c.isspace():
            if in_word:
                words.append(word)
            word, in_word = "", False
        elif c == "#" and not in_word:
            i = command.find("\n", i)
            if i < 0:
                break
            continue
        else:
            word, in_word = word + c, True
        i += 1
    if quote:
        return None
    return words + [word] if in_word else words


def _shell_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, command) of every command in the shell code blocks: ``\\`` continuations and
    quoted arguments over several lines joined, here-document bodies left out."""
    out: list[tuple[int, str]] = []
    fenced, heredoc, buf, start = False, None, "", 0
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced and line[3:].strip() in SHELL_FENCES
            continue
        if not fenced:
            continue
        if heredoc:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        start = start if buf else i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        if _shell_words(buf + line) is None:  # a quoted argument that spans lines (python -c "...")
            buf += line + "\n"
            continue
        command, buf = (buf + line).strip(), ""
        tag = re.search(r"<<-?\s*'?(\w+)'?", command)
        heredoc = tag.group(1) if tag else None
        out.append((start, command))
    return out


def _alignkit_argv(command: str) -> tuple[list[str], list[str]] | None:
    """(words before alignkit's arguments, alignkit's arguments) of a shell line that runs alignkit
    (``alignkit``, ``.venv/bin/alignkit``, ``python -m alignkit``, ``torchrun ... -m alignkit``,
    ``accelerate launch ... -m alignkit``), cut at a redirection, pipe or ``&``; else None."""
    words = []
    for w in _shell_words(command):
        if w in SHELL_STOPS or w.startswith((">", "2>")):
            break
        words.append(w)
    for i, w in enumerate(words):
        if Path(w).name == "alignkit" and (i == 0 or words[i - 1] != "-m"):
            return words[:i], words[i + 1:]
        if w == "-m" and words[i + 1:i + 2] == ["alignkit"]:
            return words[:i + 1], words[i + 2:]
    return None


def _documented_commands() -> list[tuple[str, list[str], list[str]]]:
    found = []
    for doc in DOCS:
        for line, command in _shell_lines(doc.read_text()):
            got = _alignkit_argv(command)
            if got:
                found.append((f"{doc.relative_to(ROOT)}:{line}", *got))
    return found


DOCUMENTED_COMMANDS = _documented_commands()


def _resolve_documented(where: str, argv: list[str]) -> None:
    """Route ``argv`` as ``alignkit`` does and parse it into the command's validated config: the
    YAML file loaded, flags and overrides applied and checked; nothing is run."""
    from alignkit.cli import registry, route
    from alignkit.commands import Command, resolve
    from alignkit.errors import ConfigError

    reg = registry()
    path, rest = route(reg, argv)
    entry = reg.get(path)
    assert isinstance(entry, Command), f"{where}: `alignkit {' '.join(argv)}` names no command (got {path!r})"
    if "--help" in rest or "-h" in rest:
        return
    try:
        resolve(entry, rest)
    except ConfigError as exc:
        missing = re.search(r"train\.report_to: (\w+) is not installed", str(exc))
        if missing:  # the optional trackers come with `make test`'s extras, not with every install
            pytest.skip(f"{where}: the {missing.group(1)} tracker is not installed here")
        raise AssertionError(f"{where}: `alignkit {' '.join(argv)}`\n{exc}") from exc
    except SystemExit as exc:  # argparse: unknown flag or a bad value (its message is on stderr)
        raise AssertionError(f"{where}: `alignkit {' '.join(argv)}` is refused by the parser") from exc


def test_docs_show_commands():
    assert len(DOCUMENTED_COMMANDS) >= 80, "the code-block scan of README.md and docs/*.md found too few commands"
    launchers = {Path(pre[0]).name for _, pre, _ in DOCUMENTED_COMMANDS if pre and "-m" in pre}
    assert {"torchrun", "accelerate"} <= launchers


@pytest.mark.parametrize("where, prefix, argv", DOCUMENTED_COMMANDS, ids=[w for w, _, _ in DOCUMENTED_COMMANDS])
def test_documented_command_parses(where, prefix, argv, monkeypatch):
    """Every `alignkit ...` line in the shell blocks of README.md and docs/*.md parses with the real CLI."""
    monkeypatch.chdir(ROOT)  # the docs run from the repository root (configs/..., src/...)
    for flag in ("--config_file",):  # accelerate launch's profile
        if flag in prefix:
            assert (ROOT / prefix[prefix.index(flag) + 1]).is_file(), f"{where}: {flag} names a missing file"
    _resolve_documented(where, argv)


def _inline_commands() -> list[tuple[str, str]]:
    """`alignkit ...` code spans in the prose (outside code blocks)."""
    found = []
    for doc in DOCS:
        prose = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
        found += [(str(doc.relative_to(ROOT)), m) for m in re.findall(r"`(alignkit [^`]+)`", prose)]
    return found


def test_inline_commands_name_real_commands(monkeypatch):
    """Every `alignkit WORDS ...` span in the prose names a real command or group; the ones that name a
    shipped config (``--config configs/...``) and no placeholder parse completely."""
    from alignkit.cli import registry, route

    monkeypatch.chdir(ROOT)
    reg = registry()
    placeholder = re.compile(r"^(<.*|.*>|[A-Z][A-Z_.]*|\.\.\.|…|\|)$")
    spans = _inline_commands()
    assert len(spans) > 40
    for where, span in spans:
        words = _shell_words(span)[1:]
        named = next((words[:i] for i, w in enumerate(words) if placeholder.match(w)), words)
        if not named:  # `alignkit COMMAND ...`: a synopsis
            continue
        path, rest = route(reg, named[:-1] if named and named[-1].startswith("-") else named)
        assert path, f"{where}: `{span}` names no command"
        if rest and not rest[0].startswith("-") and "=" not in rest[0] and not placeholder.match(rest[0]):
            assert not any(p.startswith(path + " ") for p in reg), (
                f"{where}: `{span}`: {rest[0]!r} is not a sub-command of `alignkit {path}`")
        if "--config" in words and words[words.index("--config") + 1].startswith("configs/") \
                and not any(placeholder.match(w) for w in words):
            _resolve_documented(where, words)


def test_documented_python_modules_exist():
    """`python -m alignkit.X` lines in the shell blocks name a module that exists."""
    import importlib.util

    modules = [(f"{doc.relative_to(ROOT)}:{line}", words[words.index("-m") + 1])
               for doc in DOCS for line, command in _shell_lines(doc.read_text())
               for words in [_shell_words(command)] if "-m" in words[:-1]]
    named = [(where, m) for where, m in modules if m.startswith("alignkit.")]
    for where, module in named:
        assert importlib.util.find_spec(module) is not None, f"{where}: python -m {module}: no such module"


def test_readme_layout_names_every_package_and_folder():
    """README's Layout block names every sub-package and module of src/alignkit and every top-level folder
    (the old block had lost the top-level modules and experiments/)."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):].split("```")[1]
    pkg = ROOT / "src" / "alignkit"
    names = [f"{p.name}/" for p in pkg.iterdir() if (p / "__init__.py").is_file()]
    names += [p.name for p in pkg.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    names += [f"{p.name}/" for p in ROOT.iterdir() if p.is_dir() and p.name in
              {"configs", "benchmarks", "experiments", "docs", "tests"}]
    missing = [n for n in names if not re.search(rf"(^|\s){re.escape(n)}(\s|$)", layout, re.M)]
    assert not missing, f"README.md Layout does not mention {missing}"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "results").rglob("*.json")))
def test_experiment_results_say_how_to_rerun(path):
    """Every committed result carries the command that wrote it, the commit and the date; one that depends on
    /tmp state (not in a clean checkout) says so in a note."""
    import datetime
    import json

    result = json.loads((ROOT / path).read_text())
    assert isinstance(result.get("command"), str) and "experiments/" in result["command"], path
    assert re.fullmatch(r"[0-9a-f]{40}", result.get("commit", "")), path
    datetime.datetime.fromisoformat(result.get("date", "").replace("Z", "+00:00"))
    how = " ".join([result["command"], *result.get("cache_commands", [])])
    if "/tmp/" in how.replace("/tmp/alignkit-heavy.lock", ""):
        assert "clean checkout" in result.get("note", ""), f"{path}: depends on /tmp state without a note"
    assert (ROOT / "experiments" / "README.md").read_text().count(path.split("/", 2)[2].split("/")[0]) > 0, (
        f"{path} is not described in experiments/README.md")
