"""Start and stop a local OpenAI-compatible server on 127.0.0.1: `transformers serve` (continuous batching) or llama.cpp.

    with local_server() as server:            # the embedded model, a free port, continuous batching on
        run_bench(BenchConfig(server.base_url, backend=server.backend, ...))
    # here the server process (and anything it started) is gone, whatever happened inside the block

`transformers serve` (transformers >= 5) is the real server the course measures: FastAPI + uvicorn, `/v1/completions`
and `/v1/chat/completions` with SSE streaming, `/health`, and `--continuous-batching` (paged KV cache, requests join
and leave the running batch at every step). It needs `pip install "transformers[serving]"` (fastapi, uvicorn, openai).
Facts about it, seen with transformers 5.17 on this CPU:
- given a local folder as FORCE_MODEL, with HF_HUB_OFFLINE=1 and HF_HUB_DISABLE_UPDATE_CHECK=1 (its CLI otherwise asks
  PyPI for a newer transformers), it never touches the network; the model is loaded before the port opens, so
  `/health` answering 200 means ready;
- `/v1/models` lists the Hugging Face *hub cache*, not the pinned model (and answers 500 when that cache folder does
  not exist): we point HF_HUB_CACHE at an empty folder so it answers an empty list, and the bench leaves `model` out;
- continuous batching sizes its paged KV cache from free memory (90 % of it on a GPU; on a CPU, 90 % of *system* RAM
  as psutil reports it: on a 24 GB machine, 1,013 blocks x 256 tokens = 259,328 tokens = 11.9 GB in float32 for this
  135M model, and the process passed 9 GiB), so we give it an explicit cache: `--cb-block-size`, `--cb-num-blocks`,
  `--cb-max-batch-tokens`; it starts lazily on the first request, so `local_server` sends one warm-up request;
- unknown request fields are refused with HTTP 422 (vLLM's `ignore_eos` included); `max_completion_tokens` and
  `stream_options` are accepted but ignored; streams end without `data: [DONE]`.

llama.cpp's server (`python -m llama_cpp.server`, from `pip install "llama-cpp-python[server]"`, which compiles
llama.cpp for several minutes) serves the embedded GGUF file itself, Q4_1 as shipped.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

ENGINES = ("transformers", "llama.cpp")
# modules each engine's server imports, and how to install them
SERVER_MODULES = {"transformers": ("fastapi", "uvicorn", "openai", "pydantic"),
                  "llama.cpp": ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                                "pydantic_settings")}
INSTALL_HINTS = {"transformers": 'pip install "transformers[serving]"',
                 "llama.cpp": 'pip install "llama-cpp-python[server]" (it compiles llama.cpp: several minutes)'}
READY_PATHS = {"transformers": "/health", "llama.cpp": "/v1/models"}  # 200 once the model is loaded
BENCH_BACKENDS = {"transformers": "transformers", "llama.cpp": "openai"}  # llmlab.serving.bench's `backend`


@dataclass
class ServerSettings:
    """How to start a local server."""

    model: str = "embedded"  # "embedded", a model folder (transformers) or a .gguf file (llama.cpp)
    engine: str = "transformers"  # "transformers" (transformers serve) or "llama.cpp" (llama-cpp-python's server)
    port: int | None = None  # None = a free port chosen by the OS
    continuous_batching: bool = True  # transformers: --continuous-batching (off = one request at a time)
    cb_block_size: int = 32  # tokens per KV block (transformers' default 256 suits GPUs)
    cb_num_blocks: int = 128  # KV blocks: 128 x 32 = 4,096 tokens, 45 KiB each in float32 = 180 MiB
    cb_max_batch_tokens: int = 512  # tokens one forward pass may hold (prefill chunks + one per decoding request)
    device: str = "cpu"  # transformers --device
    threads: int | None = None  # CPU threads of the server; None = all cores but one, left to the load generator
    ready_timeout: float = 120.0  # seconds to wait for the model to load and the port to answer
    stop_timeout: float = 10.0  # seconds between SIGTERM and SIGKILL
    warmup: bool = True  # send one short request before returning (continuous batching starts on the first one)
    log_level: str = "info"  # the server's log level (its log goes to a file: LocalServer.log_path)
    extra_args: tuple[str, ...] = ()  # more command-line arguments for the server


@dataclass
class LocalServer:
    """A running server process; `stop()` ends it (and its children) for good."""

    settings: ServerSettings  # how it was started
    base_url: str  # http://127.0.0.1:PORT
    model: str  # the folder or file it serves
    command: list[str]  # the exact command line
    process: subprocess.Popen  # the server (leader of its own process group)
    log_path: Path  # its stdout and stderr
    ready_seconds: float = 0.0  # from start to ready (model load included)
    backend: str = "openai"  # what llmlab.serving.bench must be told about this server
    exit_code: int | None = field(default=None)  # set by stop()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        """SIGTERM to its process group, SIGKILL after `stop_timeout` s; returns the exit code. Safe to call twice."""
        if self.exit_code is None:
            self.exit_code = _terminate(self.process, self.settings.stop_timeout)
            atexit.unregister(self.stop)
        return self.exit_code


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def server_threads(settings: ServerSettings) -> int:
    """CPU threads for the server: `settings.threads`, else every core but one.

    The load generator and the notebook share the machine with the server. On 2 cores, a server with 2 torch threads
    competing with them ran 5-10x slower per token than with 1 (OpenMP threads spin while they wait for each other).
    """
    return settings.threads or max(1, (os.cpu_count() or 2) - 1)


def missing_modules(engine: str = "transformers") -> list[str]:
    """The modules `engine`'s server needs that this Python cannot import (empty when it can run)."""
    _check_engine(engine)
    return [name for name in SERVER_MODULES[engine] if importlib.util.find_spec(name) is None]


def resolve_model(model: str, engine: str) -> str:
    """The folder (transformers) or GGUF file (llama.cpp) to serve; "embedded" is the course's model."""
    _check_engine(engine)
    if model in ("embedded", "default", "smollm2-135m"):
        from llmlab.zoo import find_gguf, prepare_embedded

        return str(find_gguf() if engine == "llama.cpp" else prepare_embedded())
    path = Path(model).expanduser()
    if engine == "llama.cpp" and not (path.is_file() and path.suffix == ".gguf"):
        raise FileNotFoundError(f"llama.cpp serves a .gguf file; {model} is not one (use --model embedded)")
    if engine == "transformers" and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{model} is not a model folder with a config.json; the server runs offline, so "
                                "give a local folder (or --model embedded)")
    return str(path.resolve())


def server_command(settings: ServerSettings, model: str, port: int) -> list[str]:
    """The server's command line, bound to 127.0.0.1 (pure: nothing is started)."""
    _check_engine(settings.engine)
    if settings.engine == "llama.cpp":
        command = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
                   "--port", str(port)]
        return command + ["--n_threads", str(server_threads(settings))] + list(settings.extra_args)
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model, "--host", "127.0.0.1",
               "--port", str(port), "--device", settings.device, "--log-level", settings.log_level]
    if settings.continuous_batching:
        command += ["--continuous-batching", "--cb-block-size", str(settings.cb_block_size),
                    "--cb-num-blocks", str(settings.cb_num_blocks),
                    "--cb-max-batch-tokens", str(settings.cb_max_batch_tokens)]
    else:
        command += ["--no-continuous-batching"]
    return command + list(settings.extra_args)


def start_server(settings: ServerSettings | None = None, **overrides) -> LocalServer:
    """Start a server and wait until it answers; the caller must `stop()` it (prefer `local_server`).

    Raises ModuleNotFoundError (what to install) before starting anything, RuntimeError with the end of the server's
    log when it exits early, TimeoutError when it is not ready within `ready_timeout` s (it is then stopped).
    """
    settings = replace(settings or ServerSettings(), **overrides)
    missing = missing_modules(settings.engine)
    if missing:
        raise ModuleNotFoundError(f"the {settings.engine} server needs {', '.join(missing)}: "
                                  f"{INSTALL_HINTS[settings.engine]}")
    model = resolve_model(settings.model, settings.engine)
    port = settings.port or free_port()
    command = server_command(settings, model, port)
    scratch = Path(tempfile.mkdtemp(prefix="llmlab-serve-"))
    (scratch / "empty-hub-cache").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_CACHE": str(scratch / "empty-hub-cache"), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    threads = str(server_threads(settings))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    log_path = scratch / "server.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True,  # its own process group: stop() reaches its children
                                   preexec_fn=_die_with_parent())
    server = LocalServer(settings, f"http://127.0.0.1:{port}", model, command, process, log_path,
                         backend=BENCH_BACKENDS[settings.engine])
    atexit.register(server.stop)  # a last resort if the caller forgets
    try:
        wait_ready(server)
        server.ready_seconds = time.perf_counter() - started
        if settings.warmup:
            _warmup(server)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def local_server(settings: ServerSettings | None = None, **overrides) -> Iterator[LocalServer]:
    """`start_server` as a context manager: the server is stopped when the block ends, however it ends."""
    server = start_server(settings, **overrides)
    try:
        yield server
    finally:
        server.stop()


def wait_ready(server: LocalServer) -> None:
    """Poll the server's readiness URL until it answers 200, it exits, or `ready_timeout` s pass."""
    url = server.base_url + READY_PATHS[server.settings.engine]
    deadline = time.monotonic() + server.settings.ready_timeout
    while True:
        if not server.alive():
            raise RuntimeError(f"the {server.settings.engine} server exited with code {server.process.returncode} "
                               f"before it was ready; the end of its log ({server.log_path}):\n{server.log_tail()}")
        if _status(url, timeout=2.0) == 200:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {server.settings.engine} server did not answer {url} within "
                               f"{server.settings.ready_timeout:g} s; the end of its log ({server.log_path}):\n"
                               f"{server.log_tail()}")
        time.sleep(0.25)


def _warmup(server: LocalServer) -> None:
    """One 2-token greedy completion (the continuous-batching manager and its cache start on the first request)."""
    import json

    body = json.dumps({"prompt": "Hello", "max_tokens": 2, "temperature": 0.0}).encode()
    request = urllib.request.Request(server.base_url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with _opener().open(request, timeout=server.settings.ready_timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(f"the server is up but its warm-up request failed ({error}); the end of its log "
                           f"({server.log_path}):\n{server.log_tail()}") from None


def _status(url: str, timeout: float) -> int | None:
    try:
        with _opener().open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def _die_with_parent():
    """On Linux, from the main thread: a hook that makes the server get SIGTERM if this process dies without stopping
    it (a killed kernel, a crashed test run). None elsewhere (the signal follows the thread that started the child)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _terminate(process: subprocess.Popen, timeout: float) -> int | None:
    """End a process group: SIGTERM, wait up to `timeout` s, then SIGKILL; returns the leader's exit code."""
    if process.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their leader
    return process.poll()


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
