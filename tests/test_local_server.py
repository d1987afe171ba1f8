"""The real local server: `transformers serve` with continuous batching on the embedded model, loaded by 8 streams.

Skipped (with the install command) where `transformers[serving]` is missing. The server is always stopped: after a
run, after a failed bench, after an exception in the `with` block; a server that cannot start says why with its log.
"""

import json
import socket
import subprocess
import sys

import pytest

from llmlab.serving.bench import BenchConfig, format_bench, run_bench
from llmlab.serving.local import (
    INSTALL_HINTS,
    LocalServer,
    ServerSettings,
    local_server,
    missing_modules,
    server_command,
    start_server,
)

needs_serving = pytest.mark.skipif(bool(missing_modules("transformers")),
                                   reason=f"transformers serve needs {missing_modules('transformers')}: "
                                          f"{INSTALL_HINTS['transformers']}")


def _refused(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


def test_serve_command_binds_loopback_with_a_sized_cache():
    command = server_command(ServerSettings(), "/models/m", 8123)
    assert command[1:5] == ["-m", "transformers.cli.transformers", "serve", "/models/m"]
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "8123"
    assert "--continuous-batching" in command and command[command.index("--cb-num-blocks") + 1] == "128"
    assert "--no-continuous-batching" in server_command(ServerSettings(continuous_batching=False), "/m", 1)
    llama = server_command(ServerSettings(engine="llama.cpp", threads=3), "/m.gguf", 8124)
    assert llama[1:3] == ["-m", "llama_cpp.server"] and llama[llama.index("--n_threads") + 1] == "3"


def test_refusals_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="engine must be one of transformers, llama.cpp"):
        start_server(engine="vllm")
    if missing_modules("llama.cpp"):
        with pytest.raises(ModuleNotFoundError, match=r'pip install "llama-cpp-python\[server\]"'):
            start_server(engine="llama.cpp")
    if not missing_modules("transformers"):
        with pytest.raises(FileNotFoundError, match="not a model folder with a config.json"):
            start_server(model=str(tmp_path))


@needs_serving
@pytest.mark.slow
def test_a_server_that_cannot_start_says_why_and_is_gone():
    with pytest.raises(RuntimeError, match="exited with code 2 before it was ready") as raised:
        start_server(extra_args=("--no-such-flag",), warmup=False)
    assert "No such option" in str(raised.value)  # the end of the server's own log; observed typer's message


@needs_serving
@pytest.mark.slow
def test_eight_streams_on_the_real_server_then_stopped():
    with pytest.raises(KeyError, match="after the bench"):  # an exception in the block still stops the server
        with local_server() as server:
            assert isinstance(server, LocalServer) and server.alive()
            config = BenchConfig(server.base_url, requests=16, concurrency=8, max_tokens=8, range_ratio=0.5,
                                 ignore_eos=True, backend=server.backend, prompt_words=16, request_timeout=60,
                                 time_limit=90)
            result = run_bench(config)
            m = result.metrics
            assert (m["completed"], m["failed"]) == (16, 0), m["errors"]
            assert m["max_concurrent_requests"] == 8  # 8 streams at once; observed 8
            # ignore_eos: exactly the tokens asked for, as the server's usage reports them
            assert m["total_output_tokens"] == sum(r.max_tokens for r in result.requests)
            assert m["output_tokens_from_usage"] is True and m["total_input_tokens"] > 16 * 16
            for name in ("ttft", "tpot", "itl", "e2el"):
                for stat in ("mean", "median", "p50", "p90", "p99"):
                    assert m[f"{stat}_{name}_ms"] > 0, (stat, name)
            assert m["p50_ttft_ms"] <= m["p90_ttft_ms"] <= m["p99_ttft_ms"] <= m["p99_e2el_ms"]
            print(format_bench(result))
            raise KeyError("after the bench")
    assert server.exit_code is not None and not server.alive()
    assert _refused(server.base_url)


@needs_serving
@pytest.mark.slow
def test_cli_bench_local_fails_cleanly_and_stops_its_server():
    # the server is pinned to its folder: asking for another model fails every request (HTTP 400)
    run = subprocess.run([sys.executable, "-m", "llmlab.cli", "bench", "--local", "--requests", "3",
                          "--concurrency", "3", "--max-tokens", "2", "--model", "not-the-served-model", "--json"],
                         capture_output=True, text=True, timeout=150)
    assert run.returncode == 1, run.stderr  # 1: some requests failed
    result = json.loads(run.stdout)
    assert result["metrics"]["failed"] == 3 and result["metrics"]["error_counts"] == {"http 400": 3}
    assert "Server is pinned to" in result["metrics"]["errors"][0]
    base_url = run.stderr.split(" at ")[1].split(",")[0]  # "llmlab bench: serving ... at http://127.0.0.1:P, ready"
    assert _refused(base_url)
