"""Run model-written Python in a disposable Linux sandbox: ``PythonSandbox(cfg).run(code, timeout_s)``.

The code never runs in the calling process. Each call starts bubblewrap (``bwrap``), which puts a fresh
interpreter in new user, mount, PID, network, IPC, UTS and cgroup namespaces, with a read-only view of
``/usr`` and of the interpreter's own installation, a size-capped tmpfs as its working directory
(``/sandbox``, also ``/tmp``), no network but its own loopback, and ``prlimit`` limits (CPU time,
address space, processes, file size, open files, no core dumps). The caller kills the whole process
group at the wall-time deadline or as soon as an output stream passes its cap, and reads the output
incrementally. docs/tools.md states what this does and does not promise.

Limits on processes only hold for an unprivileged uid (the kernel exempts root from RLIMIT_NPROC), so
under root a first, privileged bwrap builds a minimal view in which the interpreter is reachable and
``setpriv`` drops to ``sandbox_uid`` before the real sandbox starts.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from alignkit.config import StrictModel
from alignkit.errors import UserError

INSTALL_HINT = "install it with `make sandbox-deps` (Debian/Ubuntu: `apt-get install bubblewrap`)"
WORKDIR = "/sandbox"
_READ_CHUNK = 65536
_LAUNCHERS = ("bwrap", "setpriv", "prlimit")  # the programs between the caller and the interpreter


class SandboxUnavailable(UserError):
    """The isolation tools are missing or do not work on this machine; nothing was run."""


class SandboxConfig(StrictModel):
    """Limits of one sandboxed run. Memory, CPU time and file size are per process."""

    python: str | None = None
    """Interpreter run inside the sandbox (absolute path). None: the base installation of the interpreter
    running alignkit -- its standard library only; a virtualenv's packages are not visible."""
    memory_mb: int = Field(default=512, ge=64)
    """Address-space limit of each sandboxed process (RLIMIT_AS), MiB. Larger allocations raise MemoryError."""
    cpu_time_s: int = Field(default=10, ge=1)
    """CPU-time limit of each sandboxed process (RLIMIT_CPU), seconds; then SIGXCPU, a second later SIGKILL."""
    max_processes: int = Field(default=16, ge=2)
    """Processes and threads the sandbox may hold at once (RLIMIT_NPROC, counted per sandbox), including
    the sandbox's own init process."""
    file_size_mb: int = Field(default=16, ge=1)
    """Largest file the code may write (RLIMIT_FSIZE), MiB."""
    open_files: int = Field(default=64, ge=16)
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    workdir_mb: int = Field(default=64, ge=1)
    """Size of the tmpfs mounted at /sandbox (the working directory, also /tmp), MiB; held in memory."""
    shm_mb: int = Field(default=16, ge=1)
    """Size of the tmpfs mounted at /dev/shm (POSIX shared memory and semaphores, which multiprocessing
    uses), MiB; held in memory. Besides /sandbox it is the only writable place."""
    max_output_bytes: int = Field(default=1 << 20, ge=1024)
    """Cap on stdout and on stderr, each, bytes. A run that writes more is killed and reported as such."""
    max_code_bytes: int = Field(default=100_000, ge=1)
    """Longest program accepted (UTF-8 bytes); a longer one is refused with an error result."""
    sandbox_uid: int = Field(default=65534, ge=1)
    """Host uid (and gid) the sandbox runs as when alignkit runs as root; ignored otherwise."""


@dataclass(frozen=True)
class SandboxResult:
    """What one run produced. ``error`` is None exactly when the program ran to exit status 0."""

    stdout: str
    stderr: str
    error: str | None
    timed_out: bool
    exit_code: int | None
    """The interpreter's exit status (128 + N when killed by signal N); None when the caller killed it."""
    wall_s: float


@dataclass(frozen=True)
class _Interpreter:
    executable: str
    prefixes: tuple[str, ...]


class PythonSandbox:
    """Runs untrusted Python in a bubblewrap sandbox; thread-safe (each run is its own process tree).

    The constructor refuses (:class:`SandboxUnavailable`) when bwrap or util-linux's prlimit/setpriv is
    missing or a probe run fails; it never falls back to running code unsandboxed.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self._tools = _find_tools(as_root=os.geteuid() == 0)
        self._python = _describe_interpreter(self.config.python)
        probe = self.run("print(6 * 7)", timeout_s=30.0)
        if probe.stdout != "42\n" or probe.error is not None:
            raise SandboxUnavailable(
                f"the Python sandbox failed its probe run on this machine ({probe.error}; stderr: "
                f"{probe.stderr.strip()[-500:]!r}); bubblewrap needs unprivileged user namespaces"
            )

    @property
    def executable(self) -> str:
        """The interpreter that runs inside the sandbox (its real path on the host)."""
        return self._python.executable

    def run(self, code: str, timeout_s: float) -> SandboxResult:
        """Run ``code`` as ``/sandbox/main.py`` and return its output; never raises for what the code does."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        source = code.encode("utf-8", "replace")
        if len(source) > self.config.max_code_bytes:
            msg = f"code is {len(source)} bytes; the sandbox accepts at most {self.config.max_code_bytes}"
            return SandboxResult("", "", msg, False, None, 0.0)
        start = time.monotonic()
        code_fd = _memfd(source)
        try:
            proc = subprocess.Popen(
                self._argv(code_fd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(code_fd,), start_new_session=True, env={},
            )
        finally:
            os.close(code_fd)
        out, err, stopped = _collect(proc, start + timeout_s, self.config.max_output_bytes)
        exit_code = None if stopped else proc.returncode
        stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        error = _describe_failure(stopped, exit_code, stderr, timeout_s, self.config)
        return SandboxResult(stdout, stderr, error, stopped == "timeout", exit_code, time.monotonic() - start)

    # ------------------------------------------------------------------------------ command line
    def _argv(self, code_fd: int) -> list[str]:
        cfg, t = self.config, self._tools
        view = _view_args(self._python.prefixes)
        inner = [
            t["bwrap"], "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--hostname", "sandbox", *view, "--proc", "/proc", "--dev", "/dev",
            "--size", str(cfg.shm_mb << 20), "--tmpfs", "/dev/shm",
            "--size", str(cfg.workdir_mb << 20), "--tmpfs", WORKDIR, "--symlink", WORKDIR, "/tmp",
            "--ro-bind-data", str(code_fd), f"{WORKDIR}/main.py", "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", WORKDIR, "--clearenv",
            "--setenv", "HOME", WORKDIR, "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--", t["prlimit"], f"--cpu={cfg.cpu_time_s}:{cfg.cpu_time_s + 1}", f"--as={cfg.memory_mb << 20}",
            f"--nproc={cfg.max_processes}", f"--fsize={cfg.file_size_mb << 20}", f"--nofile={cfg.open_files}",
            "--core=0", "--", self._python.executable, "-E", "-s", "-u", f"{WORKDIR}/main.py",
        ]
        if "setpriv" not in t:
            return inner
        uid = str(cfg.sandbox_uid)
        # Root: a privileged bwrap makes the interpreter reachable for the unprivileged uid (its home may be
        # mode 0700), then setpriv drops every privilege; the pdeath signal survives the uid change.
        return [
            t["bwrap"], "--unshare-pid", "--die-with-parent", *view, "--bind", "/proc", "/proc", "--dev", "/dev", "--dir", "/tmp",
            "--", t["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--pdeathsig=SIGKILL", "--", *inner,
        ]


def _find_tools(as_root: bool) -> dict[str, str]:
    names = ["bwrap", "prlimit"] + (["setpriv"] if as_root else [])
    found = {name: shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin") for name in names}
    if found["bwrap"] is None:
        raise SandboxUnavailable(f"the Python sandbox needs bubblewrap (bwrap), which is not installed: {INSTALL_HINT}")
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise SandboxUnavailable(f"the Python sandbox needs {', '.join(missing)} from util-linux, not found")
    return {name: str(path) for name, path in found.items()}


def _describe_interpreter(python: str | None) -> _Interpreter:
    """The interpreter's real path and the installation directories it needs (queried, not guessed)."""
    exe = os.path.realpath(python or getattr(sys, "_base_executable", sys.executable))
    if not os.access(exe, os.X_OK):
        raise SandboxUnavailable(f"sandbox.python={exe!r}: not an executable file")
    query = "import os, sys; print(os.path.realpath(sys.base_prefix)); print(os.path.realpath(sys.base_exec_prefix))"
    try:
        got = subprocess.run([exe, "-E", "-s", "-c", query], capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        raise SandboxUnavailable(f"sandbox.python={exe!r}: cannot ask it for its installation ({exc})") from None
    dirs = {os.path.dirname(exe), *got.stdout.split()}
    # Everything under /usr is visible anyway; bind only the outermost of the other directories.
    dirs = {d for d in dirs if not _under(d, "/usr")}
    outer = tuple(sorted(d for d in dirs if not any(o != d and _under(d, o) for o in dirs)))
    return _Interpreter(exe, outer)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _view_args(prefixes: tuple[str, ...]) -> list[str]:
    """bwrap arguments for the read-only filesystem view: /usr (with the usual /bin, /lib* links or
    directories) and the interpreter's installation, its parent directories created world-traversable."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    made: set[str] = set()
    for prefix in prefixes:
        for parent in reversed(Path(prefix).parents[:-1]):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    return args


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("alignkit-sandbox-code")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Read stdout and stderr as they come until both close, keeping at most ``cap`` bytes of each.
    Returns ``(stdout, stderr, stopped)``; ``stopped`` is None, "timeout" or "output:<stream>" (killed)."""
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    streams = {out_fd: ("stdout", bytearray()), err_fd: ("stderr", bytearray())}
    stopped = None
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and stopped is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = "timeout"
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, _READ_CHUNK)
                name, buf = streams[key.fd]
                if not chunk:
                    sel.unregister(key.fd)
                elif len(buf) + len(chunk) > cap:
                    buf += chunk[: cap - len(buf)]
                    stopped = f"output:{name}"
                    break
                else:
                    buf += chunk
    if stopped is None:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            stopped = "timeout"
    if stopped is not None:
        _kill_group(proc)
    proc.stdout.close()
    proc.stderr.close()
    return bytes(streams[out_fd][1]), bytes(streams[err_fd][1]), stopped


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _describe_failure(stopped: str | None, exit_code: int | None, stderr: str, timeout_s: float,
                      cfg: SandboxConfig) -> str | None:
    """The short ``error`` of a result: why the run stopped, the exception's last traceback line, or the
    signal or status it died with; None for exit status 0."""
    if stopped == "timeout":
        return f"timed out after {timeout_s:g} s (wall time)"
    if stopped is not None:
        stream = stopped.split(":", 1)[1]
        return f"output limit exceeded: more than {cfg.max_output_bytes} bytes on {stream}; the run was killed"
    if exit_code == 0:
        return None
    lines = [line for line in stderr.splitlines() if line.strip()]
    if exit_code == 1 and len(lines) == 1 and lines[0].split(": ", 1)[0] in _LAUNCHERS:
        return f"sandbox failed to start: {lines[0]}"  # the code can forge this only about itself
    if exit_code is not None and exit_code > 128:
        return _signal_error(exit_code - 128, cfg)
    if "Traceback (most recent call last):" in stderr and lines:
        return lines[-1][:300]
    return f"exited with status {exit_code}"


def _signal_error(signum: int, cfg: SandboxConfig) -> str:
    if signum == signal.SIGXCPU:
        return f"CPU time limit exceeded ({cfg.cpu_time_s} s)"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"killed by {name}"
