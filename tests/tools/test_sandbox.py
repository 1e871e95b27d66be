"""The Python sandbox: normal code works, and every break-out attempt is contained with a clear result.

Each attack asserts both sides: what the sandboxed code saw, and that the host is unharmed (files not
written, processes alive, no listener contacted, no sandbox process left behind).
"""

from __future__ import annotations

import ast
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.tools.conftest import make_sandbox, sandbox_processes, wait_until_no_sandbox_processes

from alignkit.tools import PythonSandbox, SandboxConfig, SandboxUnavailable
from alignkit.tools import sandbox as sandbox_module

REPO = Path(__file__).resolve().parents[2]


def run(sb: PythonSandbox, code: str, timeout_s: float = 20.0):
    return sb.run(textwrap.dedent(code), timeout_s)


# ------------------------------------------------------------------------------------- normal code
def test_prints_and_exit_status(sandbox):
    r = run(sandbox, "import math\nprint(sum(i * i for i in range(10)), math.sqrt(2))")
    assert (r.stdout, r.stderr, r.error, r.timed_out, r.exit_code) == ("285 1.4142135623730951\n", "", None, False, 0)
    assert run(sandbox, "import sys; print('x'); sys.exit(3)").error == "exited with status 3"
    assert run(sandbox, "import sys; sys.exit(0)").error is None
    r = run(sandbox, "import os, signal; print('bye', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    assert (r.error, r.exit_code, r.stdout) == ("killed by SIGKILL", 128 + 9, "bye\n")


def test_launcher_failures_are_named():
    cfg = SandboxConfig()
    describe = sandbox_module._describe_failure
    assert describe(None, 1, "bwrap: No permissions to create new namespace\n", 5.0, cfg) == (
        "sandbox failed to start: bwrap: No permissions to create new namespace")
    assert describe(None, 1, "prlimit: failed to set the NPROC resource limit: Operation not permitted\n", 5.0, cfg) == (
        "sandbox failed to start: prlimit: failed to set the NPROC resource limit: Operation not permitted")
    assert describe(None, 1, "something: else\n", 5.0, cfg) == "exited with status 1"


def test_exception_gives_a_traceback_summary(sandbox):
    r = run(sandbox, "def f(x):\n    return 1 / x\nprint('before')\nf(0)")
    assert r.error == "ZeroDivisionError: division by zero"
    assert r.stdout == "before\n" and r.exit_code == 1
    assert 'File "/sandbox/main.py", line 2, in f' in r.stderr and "return 1 / x" in r.stderr


def test_files_live_in_the_working_directory_and_vanish(sandbox):
    r = run(sandbox, """
        import os
        open("a.txt", "w").write("kept")
        print(os.getcwd(), open("/tmp/a.txt").read(), sorted(os.listdir(".")))
    """)
    assert r.error is None and r.stdout == "/sandbox kept ['a.txt', 'main.py']\n"
    assert run(sandbox, "import os; print(sorted(os.listdir('.')))").stdout == "['main.py']\n"


def test_multiprocessing_works(sandbox):
    r = run(sandbox, """
        import multiprocessing as mp
        if __name__ == "__main__":
            with mp.Pool(2) as pool:
                print(pool.map(abs, [-1, -2, -3]))
    """)
    assert r.error is None and r.stdout == "[1, 2, 3]\n"


def test_code_too_long_is_an_error_result():
    sb = make_sandbox(max_code_bytes=100)
    r = sb.run("x = 1\n" * 50, 5.0)
    assert r.error == "code is 300 bytes; the sandbox accepts at most 100" and r.exit_code is None


def test_config_is_strict():
    with pytest.raises(ValidationError):
        SandboxConfig(memory_mb=512, memroy_mb=1)
    with pytest.raises(ValidationError):
        SandboxConfig(max_processes=1)


def test_missing_bwrap_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name, path=None: None)
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap \(bwrap\), which is not installed.*make sandbox-deps"):
        PythonSandbox()


# ------------------------------------------------------------------------------------ resource limits
def test_infinite_loop_is_killed_at_the_wall_time(sandbox):
    start = time.monotonic()
    r = run(sandbox, "print('started', flush=True)\nwhile True:\n    pass", timeout_s=1.0)
    assert r.timed_out and r.error == "timed out after 1 s (wall time)" and r.exit_code is None
    assert r.stdout == "started\n"  # output before the kill is kept
    assert time.monotonic() - start < 5
    assert wait_until_no_sandbox_processes() == []


def test_cpu_time_limit():
    sb = make_sandbox(cpu_time_s=1)
    r = run(sb, "while True:\n    pass", timeout_s=30.0)
    assert not r.timed_out and r.error == "CPU time limit exceeded (1 s)"
    assert r.wall_s < 20


def test_memory_bomb_raises_memory_error(sandbox):
    r = run(sandbox, "x = bytearray(4 * 1024 ** 3)")
    assert r.error == "MemoryError"
    r = run(sandbox, "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))")
    assert r.error == "MemoryError"


def test_fork_bomb_is_contained(sandbox):
    start = time.monotonic()
    r = run(sandbox, """
        import os, time
        while True:
            try:
                os.fork()
            except OSError as exc:
                print("fork refused:", exc.strerror, flush=True)
                time.sleep(60)
    """, timeout_s=3.0)
    assert r.timed_out and time.monotonic() - start < 10
    assert "fork refused: Resource temporarily unavailable" in r.stdout  # RLIMIT_NPROC stopped it
    assert wait_until_no_sandbox_processes() == []
    assert run(sandbox, "print('next run fine')").stdout == "next run fine\n"


def test_threads_count_against_the_process_limit():
    sb = make_sandbox(max_processes=8)
    r = run(sb, "import threading, time\nfor _ in range(20):\n    threading.Thread(target=time.sleep, args=(2,)).start()")
    assert r.error == "RuntimeError: can't start new thread"


def test_hundred_megabytes_of_output_is_cut_and_killed():
    cap = 1 << 20
    sb = make_sandbox(max_output_bytes=cap)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run(sb, "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)", timeout_s=30.0)
    assert r.error == f"output limit exceeded: more than {cap} bytes on stdout; the run was killed"
    assert r.stdout == "x" * cap and not r.timed_out and r.wall_s < 20
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 50, f"the caller buffered the output ({grown_mb:.0f} MB)"
    r = run(sb, "import sys\nsys.stderr.write('e' * 5_000_000)")
    assert r.error.endswith("bytes on stderr; the run was killed") and len(r.stderr) == cap


def test_file_size_and_workdir_limits():
    sb = make_sandbox(file_size_mb=1, workdir_mb=4)
    assert run(sb, "open('big', 'wb').write(b'x' * (2 << 20))").error == "OSError: [Errno 27] File too large"
    r = run(sb, "for i in range(10):\n    open(f'f{i}', 'wb').write(b'x' * (900 << 10))")
    assert r.error == "OSError: [Errno 28] No space left on device"


# ------------------------------------------------------------------------------------ break-out attempts
def test_cannot_write_outside_the_work_dir(sandbox, tmp_path):
    host_file = tmp_path / "pwned"
    home_file = Path.home() / "alignkit-sandbox-pwned"
    for target in ["/pwned", "/usr/pwned", "/dev/pwned", "/proc/pwned", str(host_file), str(home_file),
                   str(REPO / "pwned")]:
        r = run(sandbox, f"open({target!r}, 'w').write('x')")
        assert r.error is not None and r.error.startswith(("OSError", "FileNotFoundError", "PermissionError")), (target, r)
    assert not host_file.exists() and not home_file.exists() and not (REPO / "pwned").exists()
    assert run(sandbox, "open('/sandbox/main.py', 'w')").error == "OSError: [Errno 30] Read-only file system: '/sandbox/main.py'"


def test_cannot_read_secrets_home_or_project(sandbox):
    home = Path.home()
    home_file = next((p for p in sorted(home.iterdir()) if p.is_file()), None)
    targets = ["/etc/shadow", "/etc/passwd", str(REPO / "README.md"), str(Path(__file__))]
    targets += [str(home_file)] if home_file else []
    for target in targets:
        assert os.path.exists(target)
        r = run(sandbox, f"print(open({target!r}).read()[:20])")
        assert r.error is not None and r.error.startswith("FileNotFoundError"), (target, r)
    # The home directory shows at most the path down to the interpreter, never the user's files.
    r = run(sandbox, f"import os\nprint(sorted(os.listdir({str(home)!r})) if os.path.exists({str(home)!r}) else [])")
    inside = set(ast.literal_eval(r.stdout))
    host_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    allowed = {Path(host_python).relative_to(home).parts[0]} if host_python.startswith(str(home) + "/") else set()
    assert inside <= allowed, inside
    r = run(sandbox, "import os\nprint(sorted(os.listdir('/')))")
    assert set(ast.literal_eval(r.stdout)) <= {"bin", "dev", "lib", "lib32", "lib64", "libx32", "proc", "root", "home", "opt",
                                   "sandbox", "sbin", "tmp", "usr"}


def test_no_network_even_to_a_local_listener(sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        r = run(sandbox, f"""
            import socket
            print(socket.if_nameindex())
            socket.create_connection(("127.0.0.1", {port}), timeout=3)
        """)
        assert r.error == "ConnectionRefusedError: [Errno 111] Connection refused"
        assert r.stdout == "[(1, 'lo')]\n"  # its own loopback only
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    r = run(sandbox, "import socket\nsocket.getaddrinfo('example.com', 80)")
    assert r.error is not None and r.error.startswith("socket.gaierror")


def test_cannot_kill_the_caller_or_other_host_processes(sandbox):
    sentinel = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (os.getpid(), sentinel.pid):
            r = run(sandbox, f"import os, signal\nos.kill({pid}, signal.SIGKILL)")
            assert r.error == "ProcessLookupError: [Errno 3] No such process", r
        assert sentinel.poll() is None
    finally:
        sentinel.kill()
        sentinel.wait()
    # Its own init (pid 1, also its parent) ignores signals from inside the namespace.
    r = run(sandbox, """
        import os, signal, time
        print(os.getpid(), os.getppid())
        os.kill(1, signal.SIGKILL)
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(0.2)
        print("alive")
    """)
    assert r.error is None and r.stdout == "2 1\nalive\n"


def test_ctypes_system_stays_inside(sandbox, tmp_path):
    marker = tmp_path / "pwned"
    r = run(sandbox, f"""
        import ctypes
        libc = ctypes.CDLL(None)
        status = libc.system(b"id -u; cat /etc/shadow; touch {marker}; kill -9 {os.getpid()}; ls {REPO}")
        print("status", status >> 8)
    """)
    assert r.error is None
    assert "status 1" in r.stdout or "status 2" in r.stdout
    assert "No such file or directory" in r.stderr
    assert not marker.exists()


def test_concurrent_runs_do_not_interfere(sandbox):
    code = """
        import os, time
        open("id.txt", "w").write("{i}")
        time.sleep(0.5)
        print(open("id.txt").read(), sorted(os.listdir(".")))
    """
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(60)"
    with ThreadPoolExecutor(5) as pool:
        bombed = pool.submit(sandbox.run, bomb, 4.0)
        runs = [pool.submit(run, sandbox, code.replace("{i}", str(i)), 30.0) for i in range(4)]
        results = [f.result() for f in runs]
    for i, r in enumerate(results):
        assert r.error is None and r.stdout == f"{i} ['id.txt', 'main.py']\n", r
    assert bombed.result().timed_out  # a fork bomb next door does not use up the others' process limit
    assert wait_until_no_sandbox_processes() == []


def test_no_sandbox_process_outlives_a_killed_caller():
    assert wait_until_no_sandbox_processes() == []
    caller = subprocess.Popen(
        [sys.executable, "-c", "from alignkit.tools import PythonSandbox\nsb = PythonSandbox()\nprint('ready', flush=True)\n"
         "sb.run('import os, time\\nos.fork()\\ntime.sleep(120)', 120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert caller.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10
        while len(sandbox_processes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox_processes(), "the sandbox never started"
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    assert wait_until_no_sandbox_processes() == []
