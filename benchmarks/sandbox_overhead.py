"""Overhead of one sandboxed Python call: ``PythonSandbox.run("pass")`` against a plain interpreter start.

Both sides start the same interpreter (the sandbox's) with the same flags, so the difference is what the
sandbox adds: bubblewrap's namespaces and mounts, prlimit, the caller's pipes and, under root, the outer
privileged bwrap and setpriv. Calls alternate (plain, sandboxed, plain, ...) so that load from other work on
the machine hits both sides alike. The machine's 1-minute load average is printed before and after.

    flock /tmp/alignkit-heavy.lock .venv/bin/python benchmarks/sandbox_overhead.py --calls 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

from alignkit.tools import PythonSandbox, SandboxConfig


def measure(calls: int, warmup: int = 3) -> dict:
    sandbox = PythonSandbox(SandboxConfig())
    plain_cmd = [sandbox.executable, "-E", "-s", "-u", "-c", "pass"]
    plain, boxed = [], []
    load_before = os.getloadavg()[0]
    for i in range(warmup + calls):
        t = time.perf_counter()
        subprocess.run(plain_cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        p = time.perf_counter() - t
        t = time.perf_counter()
        result = sandbox.run("pass", timeout_s=30.0)
        b = time.perf_counter() - t
        if result.error is not None:
            raise RuntimeError(f"the sandboxed call failed: {result.error}")
        if i >= warmup:
            plain.append(p)
            boxed.append(b)
    diffs = [b - p for b, p in zip(boxed, plain, strict=True)]
    ms = lambda xs: round(1000 * statistics.median(xs), 1)  # noqa: E731
    return {
        "calls": calls,
        "median_plain_ms": ms(plain),
        "median_sandbox_ms": ms(boxed),
        "median_overhead_ms": ms(diffs),
        "p90_sandbox_ms": round(1000 * statistics.quantiles(boxed, n=10)[-1], 1),
        "as_root": os.geteuid() == 0,
        "cpus": os.cpu_count(),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50, help="measured calls per side (after 3 warm-up calls)")
    print(json.dumps(measure(ap.parse_args().calls), indent=2))


if __name__ == "__main__":
    main()
