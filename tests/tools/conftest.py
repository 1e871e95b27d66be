"""Fixtures for the tool tests: one working sandbox per module, or a skip naming the install command."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from alignkit.tools import PythonSandbox, SandboxConfig


def make_sandbox(**limits) -> PythonSandbox:
    """A sandbox, or a skip where bubblewrap is not installed (like the browser test: `make sandbox-deps`
    installs it). Installed but not working is a failure, never a skip."""
    if shutil.which("bwrap", path="/usr/bin:/bin:/usr/sbin:/sbin") is None:
        pytest.skip("bubblewrap is not installed (run `make sandbox-deps`, needs apt)")
    return PythonSandbox(SandboxConfig(**limits))


@pytest.fixture(scope="module")
def sandbox() -> PythonSandbox:
    return make_sandbox()


def sandbox_processes() -> list[str]:
    """Live processes of any sandbox: the inner bwrap and the interpreter running /sandbox/main.py."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/sandbox/main.py" in cmd or "--disable-userns" in cmd:
            found.append(f"{pid}: {cmd[:100]}")
    return found


def wait_until_no_sandbox_processes(timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
