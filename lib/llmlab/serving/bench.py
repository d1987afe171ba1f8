"""A load generator for OpenAI-compatible servers: streaming requests, TTFT, TPOT, ITL, end-to-end latency, throughput.

The same tool measures `transformers serve` on this CPU, vLLM or `trtllm-serve` on a GPU machine, llama.cpp's server
anywhere: it speaks only HTTP + Server-Sent Events (`/v1/completions` or `/v1/chat/completions` with `"stream": true`).

Metric names and definitions follow vLLM's `vllm bench serve` (vllm/benchmarks/serve.py, `calculate_metrics`, and
vllm/benchmarks/lib/endpoint_request_func.py), so a number here and a number from vLLM's tool mean the same thing:

    ttft   time to first token: from sending the request to the first streamed chunk that carries generated text
    itl    inter-token latency: the gaps between successive text chunks (a chunk may carry several tokens)
    e2el   end-to-end latency: from sending the request to the last text chunk
    tpot   time per output token after the first: (e2el - ttft) / (output_tokens - 1), one value per request
    request_throughput = completed / duration;  output_throughput = output tokens / duration;
    total_token_throughput = (input + output tokens) / duration;  duration = first send to last response

    One deliberate difference: vLLM starts TTFT's clock at the first chunk with `choices`, whatever it holds.
    `transformers serve` sends an empty `{"role": "assistant"}` chunk *before* it generates anything, which would
    make TTFT ~0 on chat endpoints; only chunks that carry text count here.

Every request ends either as a success or as an error with a reason (`"connect: ..."`, `"http 422: ..."`,
`"timeout: ..."`, `"truncated: ..."`, `"malformed: ..."`, `"server: ..."`, `"empty: ..."`, `"not sent: ..."`); the
number of requests and the total time are both bounded, so a dead, slow or broken server never hangs the benchmark.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

PERCENTILES = (50, 90, 99)  # reported for every metric (vLLM's --metric-percentiles)
# vLLM's names; the last two add the time a request waited on the client for a free slot (or for its wave)
METRICS = ("ttft", "tpot", "itl", "e2el", "client_queue_time", "e2el_including_client_queue")
# how each server family is told to ignore the end-of-sequence token, so every request generates max_tokens tokens
IGNORE_EOS_FIELDS = {
    "openai": {"ignore_eos": True},  # vLLM and trtllm-serve (an extension of the OpenAI API, in both request schemas)
    # transformers serve refuses unknown fields (HTTP 422) but takes a whole generation config; eos -1 = never stop
    "transformers": {"generation_config": json.dumps({"eos_token_id": -1, "do_sample": False})},
}
CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"


@dataclass
class BenchConfig:
    """One benchmark run: which server, how many requests, how hard, how long at most."""

    base_url: str  # e.g. http://127.0.0.1:8000 (no /v1)
    requests: int = 50  # requests sent in all (vLLM's --num-prompts)
    concurrency: int = 8  # at most this many in flight at once (vLLM's --max-concurrency)
    request_rate: float = math.inf  # new requests per second, Poisson arrivals; inf = all at once
    max_tokens: int = 32  # tokens to generate per request (the centre of the range when range_ratio > 0)
    range_ratio: float = 0.0  # max_tokens drawn uniformly from [T(1-r), T(1+r)] (vLLM's --random-range-ratio)
    endpoint: str = COMPLETIONS_ENDPOINT  # or /v1/chat/completions (vLLM's default is /v1/completions too)
    model: str | None = None  # the request's "model" field; None = the first id of /v1/models, or omitted if none
    prompt_words: int = 32  # words of offline English text per prompt (the server reports the token count)
    ignore_eos: bool = False  # generate exactly max_tokens tokens (see IGNORE_EOS_FIELDS)
    backend: str = "openai"  # "openai" (vLLM, trtllm-serve, llama.cpp) or "transformers": only changes ignore_eos
    waves: bool = False  # static batching seen from the client: a wave of `concurrency` requests, then the next
    request_timeout: float = 120.0  # seconds one request may take, connection to last byte
    connect_timeout: float = 10.0  # seconds to open a connection
    time_limit: float = 600.0  # seconds the whole benchmark may take; what is left is counted as errors
    temperature: float = 0.0  # 0 = greedy, so two runs generate the same text
    seed: int = 0  # prompts, output lengths and arrival times
    extra_body: dict = field(default_factory=dict)  # merged into every request body (vLLM's --extra-body)


@dataclass
class PlannedRequest:
    """What one request will send, and when."""

    index: int  # position in the run
    prompt: str  # the text (a user message on chat endpoints)
    max_tokens: int  # tokens asked for
    send_at: float  # seconds after the start (0 for all when request_rate is inf)


@dataclass
class RequestResult:
    """What the client saw of one request; times in seconds from the benchmark's start."""

    index: int  # position in the run
    max_tokens: int  # tokens asked for
    success: bool = False  # a complete stream, at least one text chunk, no error
    error: str = ""  # "" on success, else "<kind>: <details>"
    arrival: float = 0.0  # when it was due: its planned send time (client-side queueing = start - arrival)
    start: float | None = None  # when the request was sent (None: never sent)
    ttft: float | None = None  # seconds from start to the first text chunk
    itl: list[float] = field(default_factory=list)  # seconds between successive text chunks
    latency: float | None = None  # seconds from start to the last text chunk (e2el)
    end: float | None = None  # when the response ended (last byte)
    chunks: int = 0  # SSE events received that carried text
    output_tokens: int = 0  # the server's usage.completion_tokens, else the number of text chunks
    output_tokens_from_usage: bool = False  # True when the server reported usage
    prompt_tokens: int = 0  # the server's usage.prompt_tokens (0 when not reported)
    finish_reason: str | None = None  # "length", "stop" ... from the last chunk
    text: str = ""  # the generated text


@dataclass
class BenchResult:
    """A benchmark run: its configuration, one result per request, and the vLLM-named metrics."""

    config: BenchConfig
    requests: list[RequestResult]
    metrics: dict  # see summarize()

    def to_dict(self) -> dict:
        return {"config": {**asdict(self.config), "request_rate": _finite(self.config.request_rate)},
                "metrics": self.metrics, "requests": [asdict(r) for r in self.requests]}


# ----------------------------------------------------------------------------------------------------------------
# pure parts: the request plan, Server-Sent Events, one stream's bookkeeping, percentiles, the summary
# ----------------------------------------------------------------------------------------------------------------


def check_config(config: BenchConfig) -> None:
    """Refuse settings that cannot run, with what to do instead."""
    if not config.base_url.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must start with http:// or https://, e.g. http://127.0.0.1:8000 "
                         f"(got {config.base_url!r})")
    if config.requests < 1 or config.concurrency < 1 or config.max_tokens < 1:
        raise ValueError("--requests, --concurrency and --max-tokens must be at least 1")
    if not 0 <= config.range_ratio < 1:
        raise ValueError(f"--range-ratio must be in [0, 1), not {config.range_ratio}")
    if not config.request_rate > 0:
        raise ValueError(f"--request-rate must be > 0 requests per second (or inf), not {config.request_rate}")
    if config.waves and math.isfinite(config.request_rate):
        raise ValueError("--waves sends each wave at once: leave --request-rate at inf")
    if config.backend not in IGNORE_EOS_FIELDS:
        raise ValueError(f"--backend must be one of {', '.join(IGNORE_EOS_FIELDS)}, not {config.backend!r}")
    if not config.endpoint.endswith("completions"):
        raise ValueError(f"--endpoint must be {COMPLETIONS_ENDPOINT} or {CHAT_ENDPOINT}, not {config.endpoint!r}")
    if min(config.request_timeout, config.connect_timeout, config.time_limit) <= 0:
        raise ValueError("timeouts and --time-limit must be positive numbers of seconds")


def plan_requests(config: BenchConfig, text: str | None = None) -> list[PlannedRequest]:
    """Prompts (windows of `text`, the offline evaluation text by default), output lengths and send times; seeded."""
    if text is None:
        from llmlab.data import evaluation_text

        text = evaluation_text()
    words = text.split()
    if len(words) <= config.prompt_words:
        raise ValueError(f"the prompt text has {len(words)} words; ask for fewer than that with --prompt-words")
    rng = random.Random(config.seed)
    low = max(1, round(config.max_tokens * (1 - config.range_ratio)))
    high = max(low, round(config.max_tokens * (1 + config.range_ratio)))
    planned, send_at = [], 0.0
    for index in range(config.requests):
        offset = rng.randrange(len(words) - config.prompt_words)
        if index > 0 and math.isfinite(config.request_rate):
            send_at += rng.expovariate(config.request_rate)  # Poisson process, as vLLM's default burstiness 1
        planned.append(PlannedRequest(index, " ".join(words[offset:offset + config.prompt_words]),
                                      rng.randint(low, high), send_at))
    return planned


def request_body(config: BenchConfig, planned: PlannedRequest, model: str | None) -> dict:
    """The JSON body of one streaming request."""
    body: dict = {"max_tokens": planned.max_tokens, "temperature": config.temperature, "stream": True,
                  # vLLM reports token counts in the stream only when asked; transformers serve ignores it
                  "stream_options": {"include_usage": True}}
    if config.endpoint.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": planned.prompt}]
    else:
        body["prompt"] = planned.prompt
    if model is not None:
        body["model"] = model
    if config.ignore_eos:
        body.update(IGNORE_EOS_FIELDS[config.backend])
    body.update(config.extra_body)
    return body


class SSEDecoder:
    """Server-Sent Events, fed bytes as they arrive; returns the `data` of each complete event.

    Events end with a blank line; a `data:` field may span several lines (joined with newlines); lines starting with
    `:` are comments (keep-alive pings); `\\r\\n`, `\\r` and `\\n` all end lines; UTF-8 may be split across reads.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""  # text not yet cut into lines
        self._data: list[str] = []  # data lines of the event being read

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += self._decoder.decode(chunk)
        events = []
        while True:
            cut = min((i for i in (self._buffer.find("\r"), self._buffer.find("\n")) if i >= 0), default=-1)
            if cut < 0 or (self._buffer[cut] == "\r" and cut == len(self._buffer) - 1):
                break  # no full line yet (a trailing \r may be the first half of \r\n)
            line = self._buffer[:cut]
            self._buffer = self._buffer[cut + (2 if self._buffer.startswith("\r\n", cut) else 1):]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[str]:
        """End of stream: an event not closed by a blank line is still returned (vLLM's parser does the same)."""
        tail = self._decoder.decode(b"", final=True)
        events = self.feed(tail.encode() + b"\n\n") if (self._buffer + tail).strip() or self._data else []
        self._buffer, self._data = "", []
        return events

    def _line(self, line: str) -> str | None:
        if line == "":
            if not self._data:
                return None
            event, self._data = "\n".join(self._data), []
            return event
        if line.startswith(":"):
            return None  # a comment
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None  # event:, id:, retry: are not used by OpenAI-compatible streams


@dataclass
class Chunk:
    """One parsed SSE event of an OpenAI-compatible stream."""

    text: str = ""  # generated text it carries ("" for role, usage or finish chunks)
    finish_reason: str | None = None  # set on the last chunk of a choice
    usage: dict | None = None  # token counts, when the server sends them
    done: bool = False  # the "[DONE]" sentinel
    error: str | None = None  # an error the server reported inside the stream


def parse_chunk(data: str) -> Chunk:
    """One SSE `data` payload of /v1/completions or /v1/chat/completions; ValueError when it is not one."""
    if data.strip() == "[DONE]":
        return Chunk(done=True)
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON in an SSE event ({error.msg}): {data[:120]!r}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"an SSE event that is not a JSON object: {data[:120]!r}")
    if payload.get("error"):
        error = payload["error"]
        return Chunk(error=str(error.get("message", error) if isinstance(error, dict) else error))
    chunk = Chunk(usage=payload.get("usage") or None)
    if "choices" not in payload and chunk.usage is None:
        raise ValueError(f"an SSE event with neither choices, usage nor error: {data[:120]!r}")
    choices = payload.get("choices") or []
    if choices:
        if not isinstance(choices[0], dict):
            raise ValueError(f"choices[0] is not a JSON object: {data[:120]!r}")
        choice = choices[0]
        delta = choice.get("delta") or {}
        chunk.text = (choice.get("text") or delta.get("content") or delta.get("reasoning_content")
                      or delta.get("reasoning") or "")
        chunk.finish_reason = choice.get("finish_reason")
    return chunk


class StreamAccumulator:
    """The bookkeeping of one streamed response: feed it (payload, arrival time), then finish()."""

    def __init__(self, result: RequestResult) -> None:
        self.result = result
        self.done = False  # [DONE] seen
        self._last_text_at: float | None = None

    def add(self, data: str, at: float) -> bool:
        """Record one SSE payload received at time `at`; False once the stream has reported an error."""
        result = self.result
        try:
            chunk = parse_chunk(data)
        except ValueError as error:
            result.error = f"malformed: {error}"
            return False
        if chunk.error is not None:
            result.error = f"server: {chunk.error}"
            return False
        self.done |= chunk.done
        if chunk.text:
            if result.ttft is None:
                result.ttft = at - result.start
            else:
                result.itl.append(at - self._last_text_at)
            self._last_text_at = at
            result.latency = at - result.start
            result.chunks += 1
            result.text += chunk.text
        if chunk.finish_reason:
            result.finish_reason = chunk.finish_reason
        if chunk.usage:
            completion = chunk.usage.get("completion_tokens")
            if isinstance(completion, int):
                result.output_tokens, result.output_tokens_from_usage = completion, True
            prompt = chunk.usage.get("prompt_tokens")
            if isinstance(prompt, int):
                result.prompt_tokens = prompt
        return True

    def finish(self, at: float) -> RequestResult:
        """The stream has ended (cleanly, as far as HTTP knows): decide success or the reason it failed."""
        result = self.result
        result.end = at
        if not result.output_tokens_from_usage:
            result.output_tokens = result.chunks
        if result.error:
            pass
        elif result.chunks == 0:
            result.error = "empty: the stream ended without any generated text"
        elif not (self.done or result.finish_reason):
            result.error = (f"truncated: the stream ended after {result.chunks} text chunks without a finish_reason "
                            "or [DONE]")
        result.success = not result.error
        return result


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile with linear interpolation between closest ranks (numpy's default, as vLLM uses)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stats(name: str, seconds: list[float], percentiles: tuple[float, ...]) -> dict:
    """mean/median/std/pNN of one metric, in milliseconds, under vLLM's key names (None when there is no value)."""
    ms = [s * 1000 for s in seconds]
    mean = sum(ms) / len(ms) if ms else None
    stats = {f"mean_{name}_ms": mean, f"median_{name}_ms": percentile(ms, 50),
             f"std_{name}_ms": math.sqrt(sum((x - mean) ** 2 for x in ms) / len(ms)) if ms else None}
    for p in percentiles:
        stats[f"p{p:g}_{name}_ms"] = percentile(ms, p)
    return stats


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """The most half-open [start, end) intervals that overlap at one instant (a sweep line)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in events:  # at equal times -1 sorts first: an end frees its slot before a start takes it
        current += step
        peak = max(peak, current)
    return peak


def summarize(results: list[RequestResult], duration: float, percentiles: tuple[float, ...] = PERCENTILES) -> dict:
    """The vLLM-named metrics of a run (times in ms, throughputs per second of `duration`) and the error reasons."""
    ok = [r for r in results if r.success]
    output_tokens = sum(r.output_tokens for r in ok)
    input_tokens = sum(r.prompt_tokens for r in ok)
    metrics = {
        "duration": duration, "completed": len(ok), "failed": len(results) - len(ok),
        "total_input_tokens": input_tokens, "total_output_tokens": output_tokens,
        "request_throughput": len(ok) / duration if duration > 0 else None,
        "output_throughput": output_tokens / duration if duration > 0 else None,
        "total_token_throughput": (input_tokens + output_tokens) / duration if duration > 0 else None,
        "max_concurrent_requests": peak_concurrency([(r.start, r.end) for r in ok]),
        "output_tokens_from_usage": all(r.output_tokens_from_usage for r in ok) if ok else None,
    }
    samples = {"ttft": [r.ttft for r in ok], "e2el": [r.latency for r in ok],
               "tpot": [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1],
               "itl": [gap for r in ok for gap in r.itl], "client_queue_time": [r.start - r.arrival for r in ok],
               "e2el_including_client_queue": [r.start - r.arrival + r.latency for r in ok]}
    for name in METRICS:
        metrics.update(_stats(name, samples[name], percentiles))
    metrics["error_counts"] = dict(Counter(r.error.split(":")[0] for r in results if r.error))
    metrics["errors"] = [r.error for r in results]  # as vLLM: one entry per request, "" for a success
    return metrics


def format_bench(result: BenchResult) -> str:
    """A run as vLLM's tool prints it: counts, throughputs, then each metric's mean, median and percentiles."""
    m, c = result.metrics, result.config
    rate = "inf" if math.isinf(c.request_rate) else f"{c.request_rate:g}"
    lines = [f"{'=' * 16} Serving Benchmark Result {'=' * 16}",
             f"{'Successful requests:':<40}{m['completed']}", f"{'Failed requests:':<40}{m['failed']}",
             f"{'Maximum request concurrency:':<40}{c.concurrency}{' (waves)' if c.waves else ''}",
             f"{'Request rate configured (RPS):':<40}{rate}",
             f"{'Benchmark duration (s):':<40}{m['duration']:.2f}",
             f"{'Total input tokens:':<40}{m['total_input_tokens']}",
             f"{'Total generated tokens:':<40}{m['total_output_tokens']}",
             f"{'Request throughput (req/s):':<40}{_num(m['request_throughput'])}",
             f"{'Output token throughput (tok/s):':<40}{_num(m['output_throughput'])}",
             f"{'Total token throughput (tok/s):':<40}{_num(m['total_token_throughput'])}",
             f"{'Peak concurrent requests:':<40}{m['max_concurrent_requests']}"]
    headers = {"ttft": "Time to First Token", "tpot": "Time per Output Token (excl. 1st token)",
               "itl": "Inter-token Latency", "e2el": "End-to-end Latency",
               "client_queue_time": "Client-side Queueing",
               "e2el_including_client_queue": "Queue-inclusive End-to-end Latency"}
    short = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL", "client_queue_time": "Client Queue Time",
             "e2el_including_client_queue": "E2EL incl. Client Queue"}
    for name in METRICS if m["completed"] else ():
        lines.append(f"{headers[name]:-^58}")
        for stat in ("mean", "median", *(f"p{p:g}" for p in PERCENTILES)):
            label = stat.upper() if stat.startswith("p") else stat.capitalize()
            lines.append(f"{f'{label} {short[name]} (ms):':<40}{_num(m[f'{stat}_{name}_ms'])}")
    if m["failed"]:
        lines.append(f"{' Errors ':-^58}")
        lines += [f"{count:>5} x {kind}" for kind, count in sorted(m["error_counts"].items())]
        first = next(error for error in m["errors"] if error)
        lines.append(f"first: {first[:200]}")
    lines.append("=" * 58)
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


# ----------------------------------------------------------------------------------------------------------------
# the network part: httpx (a dependency of huggingface_hub, so always present with transformers), asyncio
# ----------------------------------------------------------------------------------------------------------------


def run_bench(config: BenchConfig, text: str | None = None) -> BenchResult:
    """Run the benchmark and return its result; never raises for a server's failures (they are counted as errors).

    Safe inside Jupyter, whose event loop is already running: the benchmark then gets a thread and a loop of its own.
    """
    check_config(config)
    planned = plan_requests(config, text)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_bench(config, planned))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _bench(config, planned)).result()


async def _bench(config: BenchConfig, planned: list[PlannedRequest]) -> BenchResult:
    import httpx

    results = [RequestResult(p.index, p.max_tokens) for p in planned]
    timeout = httpx.Timeout(config.request_timeout, connect=config.connect_timeout)
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.time_limit
    # trust_env=False: a proxy set for package downloads must not carry requests to 127.0.0.1
    async with httpx.AsyncClient(base_url=config.base_url.rstrip("/"), timeout=timeout, limits=limits,
                                 trust_env=False) as client:
        model = config.model if config.model is not None else await _first_model(client, config)
        semaphore = asyncio.Semaphore(config.concurrency)
        start = time.perf_counter()
        waves = ([planned[i:i + config.concurrency] for i in range(0, len(planned), config.concurrency)]
                 if config.waves else [planned])
        for wave in waves:
            wave_start = time.perf_counter() - start
            tasks = [asyncio.create_task(_one(client, config, model, p, results[p.index], semaphore, start,
                                              wave_start)) for p in wave]
            remaining = deadline - loop.time()
            pending = set(tasks)
            if remaining > 0:
                _, pending = await asyncio.wait(tasks, timeout=remaining)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:  # tasks cancelled before they ever ran
            if result.start is None and not result.error:
                result.error = f"not sent: the benchmark's time limit of {config.time_limit:g} s ran out first"
        ends = [r.end for r in results if r.end is not None]
        duration = (max(ends) if ends else time.perf_counter() - start)
    return BenchResult(config, results, summarize(results, duration))


async def _first_model(client, config: BenchConfig) -> str | None:
    """The first model id of GET /v1/models, or None (the field is then left out, which most servers accept)."""
    try:
        response = await asyncio.wait_for(client.get("/v1/models"), timeout=config.connect_timeout)
        return response.json()["data"][0]["id"] if response.status_code == 200 else None
    except Exception:  # noqa: BLE001 - unreachable, no such route, empty list: the requests will say what is wrong
        return None


async def _one(client, config: BenchConfig, model: str | None, planned: PlannedRequest, result: RequestResult,
               semaphore: asyncio.Semaphore, start: float, wave_start: float) -> None:
    """Wait for the send time and a free slot, then stream one request into `result`; errors become reasons."""
    try:
        delay = wave_start + planned.send_at - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        result.arrival = planned.send_at  # with --waves all are due at 0 and later waves queue behind earlier ones
        async with semaphore:
            result.start = time.perf_counter() - start
            await asyncio.wait_for(_stream(client, config, model, planned, result, start),
                                   timeout=config.request_timeout)
    except asyncio.CancelledError:
        result.error = ("not sent: the benchmark's time limit of {:g} s ran out first" if result.start is None else
                        "timeout: the benchmark's time limit of {:g} s ran out mid-request").format(config.time_limit)
        _close(result, start)
        raise
    except (asyncio.TimeoutError, TimeoutError):
        result.error = (f"timeout: no complete response within {config.request_timeout:g} s "
                        f"({result.chunks} text chunks received)")
    except Exception as error:  # noqa: BLE001 - every failure is a counted reason, never a crash of the run
        result.error = _reason(error, config)
    _close(result, start)


def _close(result: RequestResult, start: float) -> None:
    if result.start is not None and result.end is None:
        result.end = time.perf_counter() - start
    if not result.output_tokens_from_usage:
        result.output_tokens = result.chunks
    result.success = not result.error and result.chunks > 0


async def _stream(client, config: BenchConfig, model: str | None, planned: PlannedRequest, result: RequestResult,
                  start: float) -> None:
    body = request_body(config, planned, model)
    async with client.stream("POST", config.endpoint, json=body) as response:
        if response.status_code != 200:
            content = (await response.aread())[:300].decode("utf-8", errors="replace")
            result.error = f"http {response.status_code}: {content.strip() or response.reason_phrase}"
            return
        decoder, accumulator, head = SSEDecoder(), StreamAccumulator(result), b""
        async for raw in response.aiter_bytes():
            head = head or raw[:200]
            for data in decoder.feed(raw):
                if not accumulator.add(data, time.perf_counter() - start):
                    return  # the stream reported an error: stop reading, the connection is closed by `async with`
        for data in decoder.close():
            if not accumulator.add(data, time.perf_counter() - start):
                return
        accumulator.finish(time.perf_counter() - start)
        if result.error.startswith("empty") and not head.lstrip().startswith((b"data", b":")):
            kind = response.headers.get("content-type", "no content-type")
            result.error = (f"malformed: a 200 response without Server-Sent Events ({kind}): "
                            f"{head.decode('utf-8', errors='replace')[:120]!r}")


def _reason(error: Exception, config: BenchConfig) -> str:
    """A failed request's reason, from the exception the HTTP client raised."""
    import httpx

    if isinstance(error, httpx.ConnectTimeout):
        return f"connect: no connection to {config.base_url} within {config.connect_timeout:g} s"
    if isinstance(error, httpx.ConnectError):
        return f"connect: cannot reach {config.base_url} ({_root_cause(error)})"
    if isinstance(error, httpx.TimeoutException):
        return f"timeout: the server went silent for {config.request_timeout:g} s ({type(error).__name__})"
    if isinstance(error, httpx.RemoteProtocolError):
        return f"truncated: the connection broke mid-response ({error})"
    return f"client: {type(error).__name__}: {error}"


def _root_cause(error: BaseException) -> str:
    """The deepest OSError under a chained exception, e.g. "Connection refused" under httpx's generic ConnectError."""
    found, seen = str(error) or type(error).__name__, 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and (error.errno or error.strerror):
            found = os.strerror(error.errno) if error.errno else error.strerror
        error, seen = error.__cause__ or error.__context__, seen + 1
    return found
