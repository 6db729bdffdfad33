"""A llama-cpp-python server (`python -m llama_cpp.server`) on loopback, kept alive for the run.

Used by `launch = "llama_cpp"` (every adapter that talks to an OpenAI-compatible endpoint), the
tests and the benchmarks. The server is a separate process, and it can die in the middle of a
run: the framework board saw it exit on a tool grammar it could not parse, and once on retail
with no cause on record (its output went nowhere). Without a restart every later trial of the
run fails with a connection error and counts in no figure. So:

- its output always goes to a file (`log_path`, or a temporary file removed when it stops), so
  that a death can be explained;
- a watchdog thread restarts a server that exited without being asked to, on the SAME port, so
  every client's `base_url` stays valid; at most `max_restarts` times per server, each one
  announced on stderr with the exit status and the last lines the server printed (`deaths`
  keeps them);
- `wait_alive(timeout)` lets a client that saw a connection error wait for the restart before
  it retries, instead of spending its retries on a server that is starting.

A restarted server has an empty prompt cache, so its first request evaluates the whole prompt
again (slower, same tokens): same-seed trajectories after a restart can differ from an
uninterrupted run's, as after any server restart (docs/frameworks.md).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError, InfraError

TAIL_BYTES = 4096
TAIL_LINES = 6


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Process:
    """What the finalizer and the watchdog share (never the server object itself, so that the
    server can be garbage-collected and its finalizer run)."""

    command: list[str]
    log_path: str
    temporary_log: bool
    popen: subprocess.Popen | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LlamaServer:
    """A llama.cpp server on 127.0.0.1:<free port>, restarted when it dies, stopped at exit (or
    by `stop()`)."""

    _shared: dict[tuple, "LlamaServer"] = {}
    _lock = threading.Lock()

    @classmethod
    def shared(cls, model: str = "smollm2", source: str = "--agent", **options: Any) -> "LlamaServer":
        """One server per (model, options) in this process: the adapters of one run share it."""
        key = (model, tuple(sorted(options.items())))
        with cls._lock:
            server = cls._shared.get(key)
            if server is None or server.failure is not None or server._proc.stopping.is_set():
                server = cls._shared[key] = cls(model, source=source, **options)
            return server

    def __init__(self, model: str = "smollm2", *, source: str = "--agent", n_ctx: int = 4096, n_threads: int = 0,
                 alias: str = "smollm2", startup_timeout_s: float = 180.0, log_path: str | None = None,
                 chat_format: str | None = None, max_restarts: int = 3):
        from bench.adapters.local import require_llama, resolve_model

        require_llama(source)
        try:
            import uvicorn  # noqa: F401
        except ImportError:
            raise BenchError("launch = \"llama_cpp\" needs llama-cpp-python's server extra: pip install 'trajbench[server]'",
                             file=source, field="options.launch") from None
        self.model_path = resolve_model(model, source)
        self.alias = alias
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.startup_timeout_s = startup_timeout_s
        self.max_restarts = max_restarts
        self.deaths: list[str] = []   # why each earlier process ended, oldest first
        self.failure: str | None = None  # set when it died and may not be restarted any more
        command = [sys.executable, "-m", "llama_cpp.server", "--model", self.model_path, "--model_alias", alias,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx)]
        if n_threads:
            command += ["--n_threads", str(n_threads)]
        if chat_format:  # e.g. "chatml-function-calling": native tool calls for a ChatML model
            command += ["--chat_format", chat_format]
        temporary = log_path is None
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="trajbench-llama-", suffix=".log")
            os.close(handle)
        self._proc = _Process(command, log_path, temporary)
        self._finalizer = weakref.finalize(self, _stop, self._proc)
        atexit.register(self._finalizer)
        # Every process is forked by the watchdog thread, the first one too: PR_SET_PDEATHSIG
        # fires when the *thread* that forked the child exits, and the watchdog lives as long
        # as the server (a server built on a worker thread would die with that thread).
        started: list[InfraError | None] = []
        ready = threading.Event()
        threading.Thread(target=self._watch, args=(started, ready), name=f"llama-server-{self.port}", daemon=True).start()
        ready.wait()
        if started[0] is not None:
            raise started[0]

    @property
    def process(self) -> subprocess.Popen:
        assert self._proc.popen is not None
        return self._proc.popen

    @property
    def log_path(self) -> str:
        return self._proc.log_path

    @property
    def restarts(self) -> int:
        return len(self.deaths) - (self.failure is not None)

    def stop(self) -> None:
        self._finalizer()

    def alive(self) -> bool:
        """Up and answering as far as anyone knows (not dead, restarting, given up or stopped)."""
        proc = self._proc
        return proc.ready.is_set() and self.failure is None and not proc.stopping.is_set() \
            and proc.popen is not None and proc.popen.poll() is None

    def wait_alive(self, timeout_s: float) -> None:
        """Return once the server answers (at once when it is up); raise InfraError, saying why
        it died, when it is stopped, gave up restarting, or is not back within `timeout_s`."""
        proc = self._proc
        with proc.lock:  # dead but not noticed by the watchdog yet (it looks twice a second)
            if self.failure is None and not proc.stopping.is_set() and proc.popen is not None \
                    and proc.popen.poll() is not None:
                proc.ready.clear()
        up = proc.ready.wait(timeout_s)
        if self.failure is not None:
            raise InfraError(self.failure)
        if proc.stopping.is_set():
            raise InfraError(f"the llama.cpp server on port {self.port} was stopped")
        if up:
            return
        raise InfraError(f"the llama.cpp server on port {self.port} is not back after {timeout_s:.0f} s"
                         + (f"; {self.deaths[-1]}" if self.deaths else ""))

    # -- the watchdog ----------------------------------------------------------------------
    def _watch(self, started: list[InfraError | None], ready: threading.Event) -> None:
        proc = self._proc
        try:
            with proc.lock:
                _start(proc)
            self._wait_ready(self.startup_timeout_s)
            started.append(None)
        except InfraError as exc:
            started.append(exc)
            return
        finally:
            ready.set()
        while not proc.stopping.wait(0.5):
            with proc.lock:
                popen = proc.popen
                if proc.stopping.is_set() or popen is None or popen.poll() is None:
                    continue
                proc.ready.clear()
            death = f"the llama.cpp server on port {self.port} exited with status {popen.returncode}{_tail(proc.log_path)}"
            self.deaths.append(death)
            if len(self.deaths) > self.max_restarts:
                self._give_up(f"{death}; not restarted again (it died {len(self.deaths)} times)")
                return
            print(f"trajbench: warning: {death}; restarting it on the same port "
                  f"({len(self.deaths)} of at most {self.max_restarts} restarts)", file=sys.stderr)
            try:
                with proc.lock:
                    if proc.stopping.is_set():
                        return
                    _start(proc)
                self._wait_ready(self.startup_timeout_s)
            except InfraError as exc:
                self._give_up(f"{death}; the restart failed: {exc}")
                return

    def _give_up(self, failure: str) -> None:
        """Record why the server is gone for good and wake every waiter (under the lock that
        `wait_alive` takes, so that no waiter goes to sleep after this)."""
        with self._proc.lock:
            self.failure = failure
            self._proc.ready.set()
        print(f"trajbench: warning: {failure}", file=sys.stderr)

    def _wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise InfraError(f"the llama.cpp server exited with status {self.process.returncode} before it was ready"
                                 + _tail(self.log_path))
            try:
                if httpx.get(self.base_url + "/models", timeout=2.0, trust_env=False).status_code == 200:
                    self._proc.ready.set()
                    return
            except httpx.HTTPError:
                pass
            if self._proc.stopping.wait(0.2):
                raise InfraError(f"the llama.cpp server on port {self.port} was stopped while starting")
        self.stop()
        raise InfraError(f"the llama.cpp server did not answer within {timeout_s:.0f} s")


def _start(proc: _Process) -> None:
    with open(proc.log_path, "ab") as log:
        proc.popen = subprocess.Popen(proc.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                      env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONUNBUFFERED": "1"},
                                      preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _tail(log_path: str) -> str:
    """The last lines the server printed, for an error message ('' when it printed nothing)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, os.path.getsize(log_path) - TAIL_BYTES))
            lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f"; its last output: {' | '.join(lines[-TAIL_LINES:])}" if lines else ""


def _die_with_parent() -> None:
    """In the server's process, before exec: ask Linux to SIGTERM it when the thread that started
    it dies — even by a signal that skips `atexit` — so that no server outlives its run."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop(proc: _Process) -> None:
    proc.stopping.set()
    proc.ready.set()  # nobody waits for a stopped server
    with proc.lock:
        popen = proc.popen
    if popen is not None and popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    if proc.temporary_log:
        try:
            os.unlink(proc.log_path)
        except OSError:
            pass
