"""The load generator: SSE parsing, one stream's bookkeeping, percentiles, and a fake server that misbehaves.

The fake server is the standard library's http.server on 127.0.0.1 in a thread; each path is one way to fail
(truncated, malformed, slow, HTTP 500, an error event, a connection cut mid-chunk). Every failure must come back as a
counted error with a reason, within the time the benchmark was given: never a hang, never an exception.
"""

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from llmlab.serving.bench import (
    IGNORE_EOS_FIELDS,
    BenchConfig,
    RequestResult,
    SSEDecoder,
    StreamAccumulator,
    check_config,
    format_bench,
    parse_chunk,
    peak_concurrency,
    percentile,
    plan_requests,
    request_body,
    run_bench,
    summarize,
)
from llmlab.serving.local import free_port

TEXT = " ".join(f"word{i}" for i in range(500))  # prompts without loading the offline text


# ------------------------------------------------------------------ SSE


def test_sse_events_split_anywhere_and_every_line_ending():
    stream = (b'data: {"a": 1}\n\n: keep-alive ping\n\ndata: {"b":\r\ndata: 2}\r\n\r\n'
              b'event: message\ndata: caf\xc3\xa9\r\rdata: [DONE]\n\n')
    expected = ['{"a": 1}', '{"b":\n2}', "café", "[DONE]"]
    for size in (1, 2, 3, 7, len(stream)):  # one byte at a time splits \r\n and the two bytes of é
        decoder, events = SSEDecoder(), []
        for start in range(0, len(stream), size):
            events += decoder.feed(stream[start:start + size])
        assert events + decoder.close() == expected, size


def test_sse_last_event_without_blank_line_is_kept_at_close():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x": 1}\n\ndata: {"y": 2}') == ['{"x": 1}']
    assert decoder.close() == ['{"y": 2}']  # vLLM's parser keeps it too
    assert decoder.close() == []


def test_parse_chunk_completions_chat_usage_done_and_errors():
    assert parse_chunk('{"choices": [{"index": 0, "text": " Paris"}]}').text == " Paris"
    chat = parse_chunk('{"choices": [{"delta": {"content": "Hi"}, "index": 0, "finish_reason": null}]}')
    assert (chat.text, chat.finish_reason) == ("Hi", None)
    role = parse_chunk('{"choices": [{"delta": {"role": "assistant"}, "index": 0}]}')
    assert role.text == ""  # transformers serve sends this before generating: it must not start TTFT's clock
    last = parse_chunk('{"choices": [{"delta": {}, "index": 0, "finish_reason": "length"}], '
                       '"usage": {"completion_tokens": 16, "prompt_tokens": 35}}')
    assert (last.finish_reason, last.usage["completion_tokens"]) == ("length", 16)
    assert parse_chunk('{"choices": [], "usage": {"completion_tokens": 3}}').usage == {"completion_tokens": 3}
    assert parse_chunk("[DONE]").done
    assert parse_chunk('{"error": "CUDA out of memory"}').error == "CUDA out of memory"
    assert parse_chunk('{"error": {"message": "bad", "code": 400}}').error == "bad"
    for bad in ('{"choices": [{"text": "unfinished', "[1, 2]", '{"id": "x"}', '{"choices": ["x"]}'):
        with pytest.raises(ValueError):
            parse_chunk(bad)


# ------------------------------------------------------------------ one stream, then a run


def _stream(events: list[tuple[str, float]], start: float = 0.0) -> RequestResult:
    accumulator = StreamAccumulator(RequestResult(index=0, max_tokens=4, start=start))
    for data, at in events:
        if not accumulator.add(data, at):
            break
    return accumulator.finish(events[-1][1])


def test_accumulator_ttft_itl_latency_and_usage():
    result = _stream([('{"choices": [{"delta": {"role": "assistant"}}]}', 1.01),  # no text: not the first token
                      ('{"choices": [{"delta": {"content": "a"}}]}', 1.20),
                      ('{"choices": [{"delta": {"content": "b"}}]}', 1.30),
                      ('{"choices": [{"delta": {"content": "cd"}}]}', 1.50),
                      ('{"choices": [{"delta": {}, "finish_reason": "length"}], '
                       '"usage": {"completion_tokens": 4, "prompt_tokens": 9}}', 1.51)], start=1.0)
    assert result.success and result.error == ""
    assert result.ttft == pytest.approx(0.20) and result.itl == pytest.approx([0.10, 0.20])
    assert result.latency == pytest.approx(0.50)  # to the last text chunk, not to the usage chunk
    assert (result.output_tokens, result.output_tokens_from_usage, result.prompt_tokens) == (4, True, 9)
    assert result.text == "abcd" and result.finish_reason == "length"


def test_accumulator_failures_have_reasons():
    truncated = _stream([('{"choices": [{"text": "a"}]}', 0.1), ('{"choices": [{"text": "b"}]}', 0.2)])
    assert not truncated.success and truncated.error.startswith("truncated:"), truncated.error
    assert truncated.output_tokens == 2  # no usage: counted in chunks
    empty = _stream([('{"choices": [{"text": ""}], "usage": {"completion_tokens": 0}}', 0.1), ("[DONE]", 0.2)])
    assert empty.error.startswith("empty:"), empty.error
    malformed = _stream([('{"choices": [{"text": "a"}]}', 0.1), ('{"choices": [{"tex', 0.2)])
    assert malformed.error.startswith("malformed: invalid JSON"), malformed.error
    server = _stream([('{"choices": [{"text": "a"}]}', 0.1), ('{"error": "worker died"}', 0.2)])
    assert server.error == "server: worker died"
    done_only = _stream([('{"choices": [{"text": "a"}]}', 0.1), ("[DONE]", 0.2)])
    assert done_only.success  # [DONE] alone closes a stream (vLLM sends both)


def test_percentile_is_numpy_linear():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 50, 101):
        values = rng.exponential(size=n).tolist()
        for p in (0, 50, 90, 99, 99.9, 100):
            assert percentile(values, p) == pytest.approx(np.percentile(values, p), rel=1e-12), (n, p)
    assert percentile([], 50) is None


def test_peak_concurrency_half_open_intervals():
    assert peak_concurrency([(0, 1), (1, 2), (2, 3)]) == 1  # back to back: one at a time
    assert peak_concurrency([(0, 3), (1, 2), (1.5, 4), (3, 5)]) == 3
    assert peak_concurrency([]) == 0


def test_summarize_uses_vllm_names_and_definitions():
    results = [RequestResult(0, 5, success=True, start=0.0, ttft=0.1, itl=[0.05] * 4, latency=0.3, end=0.31,
                             chunks=5, output_tokens=5, output_tokens_from_usage=True, prompt_tokens=10),
               RequestResult(1, 5, success=True, start=0.1, ttft=0.2, itl=[0.1], latency=0.3, end=0.41, chunks=2,
                             output_tokens=3, prompt_tokens=10),
               RequestResult(2, 5, error="connect: cannot reach http://127.0.0.1:1 (refused)"),
               RequestResult(3, 5, error="http 422: Unexpected fields in the request: {'ignore_eos'}")]
    m = summarize(results, duration=2.0)
    assert (m["completed"], m["failed"], m["total_output_tokens"], m["total_input_tokens"]) == (2, 2, 8, 20)
    assert m["request_throughput"] == 1.0 and m["output_throughput"] == 4.0 and m["total_token_throughput"] == 14.0
    assert m["mean_tpot_ms"] == pytest.approx(((0.3 - 0.1) / 4 + (0.3 - 0.2) / 2) / 2 * 1000)  # (e2el-ttft)/(n-1)
    assert m["p50_ttft_ms"] == pytest.approx(150) and m["p99_e2el_ms"] == pytest.approx(300)
    assert m["mean_itl_ms"] == pytest.approx((4 * 50 + 100) / 5)  # every gap of every request, pooled
    for name in ("ttft", "tpot", "itl", "e2el"):
        assert {f"{k}_{name}_ms" for k in ("mean", "median", "std", "p50", "p90", "p99")} <= set(m)
    assert m["error_counts"] == {"connect": 1, "http 422": 1}
    assert m["errors"][2].startswith("connect:") and m["errors"][0] == ""
    assert m["max_concurrent_requests"] == 2 and m["output_tokens_from_usage"] is False
    nothing = summarize([RequestResult(0, 1, error="connect: x")], duration=0.5)
    assert nothing["p99_ttft_ms"] is None and nothing["completed"] == 0


def test_plan_is_seeded_and_within_range():
    config = BenchConfig("http://127.0.0.1:1", requests=200, max_tokens=20, range_ratio=0.5, request_rate=4.0,
                         prompt_words=16)
    plan = plan_requests(config, TEXT)
    assert plan == plan_requests(config, TEXT)  # same seed, same plan
    assert min(p.max_tokens for p in plan) == 10 and max(p.max_tokens for p in plan) == 30
    assert all(len(p.prompt.split()) == 16 for p in plan)
    gaps = np.diff([p.send_at for p in plan])
    assert gaps.mean() == pytest.approx(1 / 4.0, rel=0.2)  # Poisson: mean gap 1/rate; observed 0.231 (seed 0)
    assert all(p.send_at == 0 for p in plan_requests(BenchConfig("http://x", requests=5), TEXT))


def test_request_body_per_endpoint_and_backend():
    planned = plan_requests(BenchConfig("http://x", requests=1, max_tokens=7), TEXT)[0]
    completions = request_body(BenchConfig("http://x"), planned, model=None)
    assert completions["prompt"] == planned.prompt and completions["max_tokens"] == 7 and "model" not in completions
    assert completions["stream"] is True and completions["stream_options"] == {"include_usage": True}
    chat = request_body(BenchConfig("http://x", endpoint="/v1/chat/completions", ignore_eos=True), planned, "m")
    assert chat["messages"] == [{"role": "user", "content": planned.prompt}] and chat["model"] == "m"
    assert chat["ignore_eos"] is True
    transformers = request_body(BenchConfig("http://x", ignore_eos=True, backend="transformers",
                                            extra_body={"seed": 3}), planned, None)
    assert "ignore_eos" not in transformers and transformers["seed"] == 3  # transformers serve answers 422 to it
    assert json.loads(transformers["generation_config"]) == {"eos_token_id": -1, "do_sample": False}
    assert set(IGNORE_EOS_FIELDS) == {"openai", "transformers"}


@pytest.mark.parametrize("changes, message", [
    ({"base_url": "127.0.0.1:8000"}, "must start with http"),
    ({"requests": 0}, "at least 1"),
    ({"range_ratio": 1.0}, "range-ratio"),
    ({"request_rate": 0.0}, "request-rate"),
    ({"waves": True, "request_rate": 2.0}, "waves"),
    ({"backend": "tgi"}, "backend"),
    ({"endpoint": "/v1/embeddings"}, "endpoint"),
    ({"time_limit": 0}, "positive"),
])
def test_check_config_refusals(changes, message):
    with pytest.raises(ValueError, match=message):
        check_config(BenchConfig(**{"base_url": "http://127.0.0.1:8000", **changes}))


# ------------------------------------------------------------------ a fake server that misbehaves


def _sse(payload) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


def _token(text: str) -> bytes:
    return _sse({"choices": [{"index": 0, "text": text, "finish_reason": None}]})


FINISH = _sse({"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 3}})


class FakeServer(BaseHTTPRequestHandler):
    """One behaviour per path prefix: /ok, /done, /truncated, /cut, /malformed, /error, /slow, /stall, /500, /json."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        self._send_json(404, {"detail": "Not Found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        kind = self.path.split("/")[1]
        if kind == "500":
            return self._send_json(500, {"detail": "boom"})
        if kind == "json":
            return self._send_json(200, {"choices": [{"text": "not streamed"}]})
        assert body["stream"] is True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if kind == "slow":
            time.sleep(0.3)
        tokens = [_token(t) for t in ("a", "b", "c")]
        events = {"ok": tokens + [FINISH], "done": tokens + [_sse("[DONE]")], "truncated": tokens[:2],
                  "malformed": tokens[:1] + [b'data: {"choices": [{"tex\n\n'],
                  "error": tokens[:1] + [_sse({"error": "CB worker died"})], "slow": tokens + [FINISH],
                  "stall": tokens[:1], "cut": tokens[:1]}[kind]
        for event in events:
            self._chunk(event)
            if kind == "slow":
                time.sleep(0.05)
        if kind == "stall":
            time.sleep(3)  # longer than the request timeout the test gives
        if kind == "cut":  # announce 100 bytes, send 5, hang up: an HTTP-level truncation
            self.wfile.write(b"64\r\ndata:")
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def fake_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _bench(url: str, kind: str, **changes):
    config = BenchConfig(url, **{"requests": 4, "concurrency": 2, "max_tokens": 3, "prompt_words": 8,
                                 "endpoint": f"/{kind}/v1/completions", "request_timeout": 1.0,
                                 "connect_timeout": 1.0, "time_limit": 10.0, **changes})
    started = time.perf_counter()
    result = run_bench(config, TEXT)
    return result, time.perf_counter() - started


def test_fake_server_good_streams(fake_url):
    for kind in ("ok", "done"):
        result, _ = _bench(fake_url, kind)
        m = result.metrics
        assert (m["completed"], m["failed"]) == (4, 0), m["errors"]
        assert m["max_concurrent_requests"] <= 2
    assert result.requests[0].text == "abc"
    slow, _ = _bench(fake_url, "slow", requests=2)
    assert slow.metrics["completed"] == 2 and slow.metrics["p50_ttft_ms"] >= 300  # the server's 0.3 s before text
    assert slow.metrics["mean_itl_ms"] >= 40  # 0.05 s between chunks
    assert "Successful requests:" in format_bench(slow)


def test_waves_queue_on_the_client(fake_url):
    # 4 requests, 2 at a time: the second pair waits for the first (0.45 s of stream on the slow path)
    for waves in (False, True):
        result, _ = _bench(fake_url, "slow", waves=waves)
        queue = [r.start - r.arrival for r in result.requests]
        assert queue[0] < 0.1 and queue[1] < 0.1 and min(queue[2:]) > 0.4, queue  # observed 0.52 s
        m = result.metrics
        assert m["p99_client_queue_time_ms"] == pytest.approx(1000 * max(queue), rel=0.01)  # p99 of 4: near the max
        assert m["mean_e2el_including_client_queue_ms"] > m["mean_e2el_ms"]
    starts = [r.start for r in result.requests]  # waves: the second pair starts together, after both of the first
    assert abs(starts[2] - starts[3]) < 0.05 and starts[2] >= max(r.end for r in result.requests[:2]) - 1e-6


@pytest.mark.parametrize("kind, reason", [
    ("truncated", "truncated: the stream ended after 2 text chunks"),
    ("cut", "truncated: the connection broke mid-response"),
    ("malformed", "malformed: invalid JSON"),
    ("error", "server: CB worker died"),
    ("500", 'http 500: {"detail": "boom"}'),
    ("json", "malformed: a 200 response without Server-Sent Events (application/json)"),
    ("stall", "timeout: no complete response within 1 s (1 text chunks received)"),
])
def test_fake_server_failures_are_counted_with_reasons(fake_url, kind, reason):
    result, seconds = _bench(fake_url, kind)
    m = result.metrics
    assert (m["completed"], m["failed"]) == (0, 4)
    assert all(error.startswith(reason) for error in m["errors"]), m["errors"]
    assert seconds < 5  # stall: 2 waves of 1 s timeouts; observed 2.0 s
    assert "Failed requests:                        4" in format_bench(result)


def test_unreachable_port_fails_fast_with_a_reason():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result, seconds = _bench(url, "ok", requests=6, concurrency=3)
    assert result.metrics["failed"] == 6 and result.metrics["error_counts"] == {"connect": 6}
    assert result.metrics["errors"][0] == f"connect: cannot reach {url} (Connection refused)"
    assert seconds < 3  # refused at once; observed 0.05 s
    assert result.metrics["p99_ttft_ms"] is None and result.metrics["request_throughput"] == 0


def test_time_limit_bounds_the_whole_run(fake_url):
    result, seconds = _bench(fake_url, "stall", requests=6, concurrency=2, request_timeout=30.0, time_limit=1.0)
    errors = result.metrics["errors"]
    assert seconds < 3  # the server would stall 3 s per request; the run stops at 1 s; observed 1.0 s
    assert sum(e.startswith("timeout: the benchmark's time limit of 1 s ran out mid-request") for e in errors) == 2
    assert sum(e.startswith("not sent: the benchmark's time limit of 1 s") for e in errors) == 4
    waves, seconds = _bench(fake_url, "stall", requests=6, concurrency=2, request_timeout=30.0, time_limit=1.0,
                            waves=True)
    assert seconds < 3 and waves.metrics["error_counts"] == {"timeout": 2, "not sent": 4}


def test_run_bench_inside_a_running_event_loop(fake_url):
    import asyncio

    async def notebook_cell():  # Jupyter runs cells inside an event loop: run_bench must still work there
        return run_bench(BenchConfig(fake_url, requests=2, endpoint="/ok/v1/completions", prompt_words=8), TEXT)

    assert asyncio.run(notebook_cell()).metrics["completed"] == 2


def test_to_dict_is_json():
    result, _ = _bench(f"http://127.0.0.1:{free_port()}", "ok", requests=1)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["config"]["request_rate"] == "inf" and not math.isnan(data["metrics"]["duration"])


def test_cli_bench_json_and_refusals(capsys):
    from llmlab.cli import main

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["bench", "--base-url", url, "--requests", "2", "--max-tokens", "2", "--json"]) == 1  # 1: failures
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["error_counts"] == {"connect": 2} and printed["config"]["base_url"] == url
    assert main(["bench", "--base-url", "127.0.0.1:8000"]) == 2
    assert capsys.readouterr().err == ("llmlab bench: error: --base-url must start with http:// or https://, e.g. "
                                       "http://127.0.0.1:8000 (got '127.0.0.1:8000')\n")
    assert main(["bench", "--base-url", url, "--extra-body", "[1]"]) == 2
    assert "--extra-body must be a JSON object" in capsys.readouterr().err
