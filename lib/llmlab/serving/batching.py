"""Static vs continuous batching, simulated on a roofline step-cost model, and set beside a measured run.

Static batching (what a plain `generate` loop does): take up to `batch_size` waiting requests, pad their prompts to the
longest, prefill them together, decode until the longest output is done, then take the next batch. A request that
arrives meanwhile waits for the whole batch; finished sequences keep their slot (padding) until the batch ends.
Continuous batching (Yu et al., "Orca", OSDI 2022: iteration-level scheduling; vLLM's scheduler,
vllm/v1/core/sched/scheduler.py): every iteration, finished requests leave and waiting ones join, up to
max_num_seqs and the KV blocks free; prompts are prefilled in chunks that share an iteration's token budget
(max_num_batched_tokens) with the running requests' decode tokens (chunked prefill, as vLLM V1 always does).

One iteration's time is a roofline over what it reads and computes (per GPU of tp):
    memory   (weight bytes + KV bytes of the cached tokens the decoding requests attend to) / bandwidth
    compute  2 x active params x (prefill tokens + decode tokens) / FLOP/s
    time     overhead + max(memory, compute)
Attention's own FLOPs, all-reduce time and kernel efficiency curves are left out: the model is for comparing
schedulers and formats under the same assumptions, not for predicting a card to the percent. `StepCost.from_plan`
builds it from the planner and the GPU catalog; `StepCost.calibrated` from two speeds measured on a real server.

Clients are simulated the way `llmlab.serving.bench` drives a server: each request is sent at its arrival time, but
with `concurrency` set no more than that many are in flight (the bench's --concurrency), or, with `waves`, in waves
of `concurrency` sent when the previous wave has finished. Metrics (`BatchingResult.summary`) carry the names and
units of vLLM's `vllm bench serve`, as the load generator's do: TTFT = first token - send; TPOT = (last token -
first token) / (output - 1); E2EL = last token - send; queue = first computed on - send (simulation only);
throughputs per second of duration = last token - first send. `compare_with_measured` sets the two side by side.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from llmlab.serving.paged import synthetic_trace

MODES = ("static", "continuous")
COMPARED = ("duration", "request_throughput", "output_throughput", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
            "p99_tpot_ms", "median_e2el_ms", "p99_e2el_ms")  # what a simulation and the load generator both report
PERCENTILES = (50, 90, 99)

# --------------------------------------------------------------------------------------------------------------
# The step-cost model
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCost:
    """Seconds of one engine iteration: overhead + max(bytes read / bandwidth, FLOPs / FLOP rate), per GPU."""

    weight_bytes: float  # bytes of weights each iteration reads (this GPU's shard)
    kv_bytes_per_token: float  # bytes read per cached token a decoding request attends to (this GPU's share)
    flops_per_token: float  # FLOPs of one token through the matmuls: 2 x active params / tp
    bandwidth: float  # achievable memory bandwidth, bytes/s
    flops: float  # achievable matmul rate, FLOP/s
    overhead_s: float  # fixed cost of an iteration: scheduling, kernel launches, sampling
    label: str = ""  # what it models, in words

    def seconds(self, prefill_tokens, decode_sequences, kv_tokens):
        """Time of iterations with these prefill tokens, decoding sequences and cached tokens read (numpy-friendly)."""
        memory = (self.weight_bytes + kv_tokens * self.kv_bytes_per_token) / self.bandwidth
        compute = (prefill_tokens + decode_sequences) * self.flops_per_token / self.flops
        return self.overhead_s + np.maximum(memory, compute)

    def seconds_one(self, prefill_tokens: int, decode_sequences: int, kv_tokens: int) -> float:
        """`seconds` for one iteration, in plain Python floats (the continuous scheduler calls it every iteration)."""
        memory = (self.weight_bytes + kv_tokens * self.kv_bytes_per_token) / self.bandwidth
        compute = (prefill_tokens + decode_sequences) * self.flops_per_token / self.flops
        return self.overhead_s + (memory if memory > compute else compute)

    @classmethod
    def from_plan(cls, model, gpu, precision: str = "bf16", kv_dtype: str | None = None, tp: int = 1,
                  bandwidth_efficiency: float = 0.8, compute_efficiency: float = 0.6, overhead_s: float = 0.001,
                  group_size: int | None = 128) -> "StepCost":
        """From the planner's bytes and the GPU's datasheet: weights and KV per GPU, dense TFLOPS of the format the
        matmuls run in (int4/nf4 weights multiply in fp16; fp8 on a GPU without FP8 runs as fp16)."""
        from llmlab.engines import vllm_budget
        from llmlab.hardware import gpu as catalog_gpu
        from llmlab.memory import FORMATS
        from llmlab.models import load_spec

        spec, device = load_spec(model), catalog_gpu(gpu)
        budget = vllm_budget(spec, device, precision, kv_dtype, tp, max_model_len=1, group_size=group_size)
        matmul = FORMATS[precision].matmul
        tflops = device.tflops.get(matmul) or device.tflops["fp16"]
        return cls(weight_bytes=budget.weights_bytes, kv_bytes_per_token=budget.kv_bytes_per_token,
                   flops_per_token=2 * spec.active_params / tp,
                   bandwidth=bandwidth_efficiency * device.bandwidth_gb_s * 1e9,
                   flops=compute_efficiency * tflops * 1e12, overhead_s=overhead_s,
                   label=f"{spec.name} {precision} ({budget.kv_dtype} KV) on {tp}x {device.name}: "
                         f"{bandwidth_efficiency:.0%} of {device.bandwidth_gb_s:g} GB/s, "
                         f"{compute_efficiency:.0%} of {tflops:g} TFLOPS ({matmul if matmul in device.tflops else 'fp16'})")

    @classmethod
    def calibrated(cls, weight_bytes: float, flops_per_token: float, decode_step_s: float,
                   prefill_tokens_per_s: float, kv_bytes_per_token: float = 0.0, label: str = "") -> "StepCost":
        """From a real server: the time of one decode step of one short request (memory-bound: sets the bandwidth)
        and the prefill speed of a long prompt (compute-bound: sets the FLOP rate)."""
        if decode_step_s <= 0 or prefill_tokens_per_s <= 0:
            raise ValueError("decode_step_s and prefill_tokens_per_s must be positive measurements")
        return cls(weight_bytes, kv_bytes_per_token, flops_per_token, bandwidth=weight_bytes / decode_step_s,
                   flops=flops_per_token * prefill_tokens_per_s, overhead_s=0.0,
                   label=label or f"calibrated: {decode_step_s * 1e3:.1f} ms per decode step, "
                                  f"{prefill_tokens_per_s:,.0f} prefill tokens/s")


# --------------------------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Requests with lengths and arrival times in seconds."""

    prompt: np.ndarray  # [N] int64 prompt tokens
    output: np.ndarray  # [N] int64 tokens to generate (>= 1)
    arrival_s: np.ndarray  # [N] float64 arrival times, sorted
    name: str = "workload"

    def __len__(self) -> int:
        return len(self.prompt)


def poisson_workload(requests: int, rate_per_s: float | None, distribution: str = "sharegpt",
                     max_model_len: int = 4096, seed: int = 0) -> Workload:
    """`requests` requests with DISTRIBUTIONS lengths arriving as a Poisson process of `rate_per_s` (None: all at 0)."""
    trace = synthetic_trace(requests, distribution, max_model_len, seed)
    rng = np.random.default_rng(seed + 1)
    if rate_per_s is None:
        arrival = np.zeros(requests)
    elif rate_per_s > 0:
        arrival = np.cumsum(rng.exponential(1 / rate_per_s, requests))
    else:
        raise ValueError(f"rate_per_s is requests per second and must be > 0 (or None for a backlog), not {rate_per_s}")
    rate = "backlog" if rate_per_s is None else f"{rate_per_s:g} req/s"
    return Workload(trace.prompt, trace.output, arrival, f"{distribution} x {requests}, {rate}, seed {seed}")


def workload_from_lengths(prompt, output, arrival_s=None, name: str = "lengths") -> Workload:
    prompt, output = np.asarray(prompt, np.int64), np.asarray(output, np.int64)
    if prompt.shape != output.shape or prompt.ndim != 1 or not len(prompt) or prompt.min() < 1 or output.min() < 1:
        raise ValueError("prompt and output must be two equally long lists of integers >= 1")
    arrival = np.zeros(len(prompt)) if arrival_s is None else np.asarray(arrival_s, float)
    if arrival.shape != prompt.shape or (np.diff(arrival) < 0).any() or arrival.min() < 0:
        raise ValueError("arrival_s must give one time >= 0 per request, in increasing order")
    return Workload(prompt, output, arrival, name)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class BatchingResult:
    """One scheduler serving one workload: per-request times (seconds) and iteration counts."""

    mode: str  # "static" or "continuous"
    workload: str  # the workload's name
    cost: str  # the step-cost model's label
    settings: dict  # the scheduler's and the clients' knobs
    sent: np.ndarray = field(repr=False)  # [N] when each request was sent (its arrival, or later if the clients wait)
    scheduled: np.ndarray = field(repr=False)  # [N] first time the server computed on it
    first_token: np.ndarray = field(repr=False)  # [N] time of its first output token
    finish: np.ndarray = field(repr=False)  # [N] time of its last output token
    prompt: np.ndarray = field(repr=False)  # [N] prompt tokens
    output: np.ndarray = field(repr=False)  # [N] tokens generated
    iterations: int = 0  # engine iterations run
    busy_s: float = 0.0  # time the engine spent computing
    mean_batch: float = 0.0  # sequences per iteration (decoding or prefilling)
    padding_fraction: float = 0.0  # static: share of computed token slots that were padding
    preemptions: int = 0  # continuous: requests evicted for lack of KV blocks

    def summary(self) -> dict:
        """The run's metrics under vLLM's names (times in ms, throughputs per second), plus the scheduler's counts."""
        duration = float(self.finish.max() - self.sent.min())
        many = self.output > 1
        samples = {"ttft": self.first_token - self.sent, "e2el": self.finish - self.sent,
                   "tpot": (self.finish - self.first_token)[many] / (self.output[many] - 1),
                   "queue": self.scheduled - self.sent}
        metrics = {"mode": self.mode, "duration": duration, "completed": len(self.sent), "failed": 0,
                   "total_input_tokens": int(self.prompt.sum()), "total_output_tokens": int(self.output.sum()),
                   "request_throughput": len(self.sent) / duration,
                   "output_throughput": float(self.output.sum() / duration),
                   "total_token_throughput": float((self.prompt.sum() + self.output.sum()) / duration)}
        for name, values in samples.items():
            ms = 1000 * np.asarray(values, float)
            metrics[f"mean_{name}_ms"] = float(ms.mean()) if len(ms) else None
            metrics[f"median_{name}_ms"] = float(np.median(ms)) if len(ms) else None
            for q in PERCENTILES:
                metrics[f"p{q}_{name}_ms"] = float(np.percentile(ms, q)) if len(ms) else None
        metrics.update(iterations=self.iterations, mean_batch=self.mean_batch, busy_fraction=self.busy_s / duration,
                       padding_fraction=self.padding_fraction, preemptions=self.preemptions)
        return metrics


class _Clients:
    """When each request is sent: at its arrival, but with `concurrency` no more than that many in flight (a
    semaphore: request i waits for the (i - concurrency + 1)-th completion), or with `waves` in waves of `concurrency`
    requests, each sent when the whole previous wave has finished."""

    def __init__(self, arrival: np.ndarray, concurrency: int | None, waves: bool):
        if concurrency is not None:
            _check_positive(concurrency=concurrency)
        if waves and concurrency is None:
            raise ValueError("waves need a concurrency: the number of requests in each wave")
        self.arrival, self.concurrency, self.waves = arrival, concurrency, waves
        self.completions: list[float] = []  # completion times, in the order they happened
        self.wave_left: dict[int, int] = {}  # wave -> requests of it not finished yet
        self.wave_end: dict[int, float] = {}  # wave -> when its last request finished

    def send_time(self, i: int) -> float | None:
        """When request i is sent, or None while that depends on completions still to come."""
        C = self.concurrency
        if C is None or i < C:
            gate = 0.0
        elif self.waves:
            gate = self.wave_end.get(i // C - 1)
        else:
            gate = self.completions[i - C] if len(self.completions) > i - C else None
        return None if gate is None else max(float(self.arrival[i]), gate)

    def completed(self, i: int, t: float) -> None:
        self.completions.append(t)
        if self.waves:
            wave = i // self.concurrency
            size = min(self.concurrency, len(self.arrival) - wave * self.concurrency)
            self.wave_left[wave] = self.wave_left.get(wave, size) - 1
            if self.wave_left[wave] == 0:
                self.wave_end[wave] = t


# --------------------------------------------------------------------------------------------------------------
# Static batching
# --------------------------------------------------------------------------------------------------------------


def simulate_static(workload: Workload, cost: StepCost, batch_size: int = 8, max_wait_s: float = 0.0,
                    kv_tokens: int | None = None, concurrency: int | None = None,
                    waves: bool = False) -> BatchingResult:
    """Batches of up to `batch_size`, padded, run to the longest output before the next batch starts.

    The server starts a batch when it is free and either `batch_size` requests wait or the oldest has waited
    `max_wait_s`. kv_tokens: if given, a batch never reserves more than that (batch x padded length).
    concurrency / waves: how the clients send (see `_Clients`); None = each request at its arrival.
    """
    _check_positive(batch_size=batch_size)
    if max_wait_s < 0:
        raise ValueError(f"max_wait_s must be >= 0, not {max_wait_s}")
    N = len(workload)
    prompt, output = workload.prompt, workload.output
    clients = _Clients(workload.arrival_s, concurrency, waves)
    sent, scheduled, first, finish = np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(N)
    t, i = 0.0, 0
    iterations = busy = batch_sum = computed_slots = useful_slots = 0
    while i < N:
        # the requests that could join: sent by the time the batch would start (every earlier batch has finished)
        candidates = []
        for j in range(i, min(i + batch_size, N)):
            when = clients.send_time(j)
            if when is None:
                break
            candidates.append(when)
        start = max(t, candidates[0], min(candidates[0] + max_wait_s, candidates[-1]))
        j = i + sum(1 for when in candidates if when <= start)
        j = _fit_batch(prompt, output, i, j, kv_tokens)
        P, D, b = int(prompt[i:j].max()), int(output[i:j].max()), j - i
        prefill_s = float(cost.seconds(b * P, 0, 0))
        steps = cost.seconds(0, b, b * (P + np.arange(1, D)))  # decode steps 2 .. D: every slot, padded KV
        clock = start + prefill_s + np.concatenate([[0.0], np.cumsum(steps)])  # time of output token 1 .. D
        sent[i:j], scheduled[i:j], first[i:j] = candidates[:j - i], start, clock[0]
        finish[i:j] = clock[output[i:j] - 1]
        for r in np.argsort(finish[i:j], kind="stable") + i:
            clients.completed(int(r), float(finish[r]))
        t = float(clock[-1])
        iterations += D
        busy += t - start
        batch_sum += b * D
        computed_slots += b * (P + D)
        useful_slots += int((prompt[i:j] + output[i:j]).sum())
        i = j
    settings = {"batch_size": batch_size, "max_wait_s": max_wait_s, "kv_tokens": kv_tokens,
                "concurrency": concurrency, "waves": waves}
    return BatchingResult("static", workload.name, cost.label, settings, sent, scheduled, first, finish, prompt,
                          output, iterations, busy, batch_sum / iterations, 1 - useful_slots / computed_slots)


def _fit_batch(prompt, output, i: int, j: int, kv_tokens: int | None) -> int:
    """Shrink the batch [i, j) until batch x padded length fits kv_tokens."""
    if kv_tokens is None:
        return j
    while j - i > 1 and (j - i) * int((prompt[i:j].max() + output[i:j].max())) > kv_tokens:
        j -= 1
    if int(prompt[i] + output[i]) > kv_tokens:
        raise ValueError(f"request {i} needs {int(prompt[i] + output[i])} KV tokens, more than kv_tokens {kv_tokens}")
    return j


# --------------------------------------------------------------------------------------------------------------
# Continuous batching
# --------------------------------------------------------------------------------------------------------------


def simulate_continuous(workload: Workload, cost: StepCost, max_num_seqs: int = 256,
                        max_num_batched_tokens: int = 8192, kv_tokens: int | None = None, block_size: int = 16,
                        concurrency: int | None = None, waves: bool = False) -> BatchingResult:
    """Iteration-level scheduling with chunked prefill and paged KV blocks (vLLM V1's scheduler, simplified).

    Each iteration: every decoding request takes one token of the budget; the rest goes, first come first served,
    to prompts being prefilled (in chunks); a request joins while fewer than max_num_seqs run and its chunk's blocks
    are free. When a decoding request needs a block and none is free, the last admitted request is preempted and
    recomputed later. kv_tokens None = unlimited KV memory. concurrency / waves: how the clients send.
    """
    _check_positive(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, block_size=block_size)
    N = len(workload)
    clients = _Clients(workload.arrival_s, concurrency, waves)
    total_blocks = math.inf if kv_tokens is None else kv_tokens // block_size
    longest = int((workload.prompt + workload.output).max())
    if total_blocks < math.ceil(longest / block_size):
        raise ValueError(f"the longest request ({longest} tokens) does not fit kv_tokens {kv_tokens}; give the KV "
                         "cache more memory or drop the request")
    # per-request state as Python lists (the loop touches single elements, which lists do fastest)
    prompt, output = workload.prompt.tolist(), workload.output.tolist()
    to_prefill = list(prompt)  # tokens to compute before the next output token (grows on preemption)
    computed = [0] * N  # tokens whose K and V are cached
    generated = [0] * N
    sent, scheduled, first, finish = [0.0] * N, [None] * N, [None] * N, [0.0] * N
    waiting: deque[int] = deque()
    running: list[int] = []  # in admission order
    t, next_request, done, free = 0.0, 0, 0, total_blocks
    iterations = busy = batch_sum = preemptions = 0

    def blocks(tokens: int) -> int:
        return -(-tokens // block_size)

    while done < N:
        while next_request < N:  # requests sent by now join the queue
            when = clients.send_time(next_request)
            if when is None or when > t:
                break
            sent[next_request] = when
            waiting.append(next_request)
            next_request += 1
        if not running and not waiting:
            t = clients.send_time(next_request)  # idle until the next request is sent
            continue
        # 1. decode tokens: one per running request whose prompt is done; make room by preempting the newest
        decoding = [r for r in running if computed[r] >= to_prefill[r]]
        need = sum(blocks(computed[r] + 1) - blocks(computed[r]) for r in decoding)
        while need > free:
            victim = running.pop()
            free += blocks(computed[victim])
            if victim in decoding:
                decoding.remove(victim)
                need -= blocks(computed[victim] + 1) - blocks(computed[victim])
            to_prefill[victim] = prompt[victim] + generated[victim]  # recompute prompt + what it generated
            computed[victim] = 0
            waiting.appendleft(victim)
            preemptions += 1
        free -= need
        budget = max_num_batched_tokens - len(decoding)
        # 2. prefill chunks: running requests still prefilling, then newcomers, first come first served
        chunks: dict[int, int] = {}
        for r in running:
            if computed[r] < to_prefill[r] and budget > 0:
                chunk = _chunk(to_prefill[r] - computed[r], budget, computed[r], free, block_size)
                if chunk:
                    chunks[r], budget = chunk, budget - chunk
                    free -= blocks(computed[r] + chunk) - blocks(computed[r])
        while waiting and budget > 0 and len(running) < max_num_seqs:
            r = waiting[0]
            chunk = _chunk(to_prefill[r] - computed[r], budget, computed[r], free, block_size)
            if not chunk:
                break  # head-of-line: the first waiting request does not fit, nobody behind it goes first
            waiting.popleft()
            running.append(r)
            chunks[r], budget = chunk, budget - chunk
            free -= blocks(computed[r] + chunk) - blocks(computed[r])
            if scheduled[r] is None:
                scheduled[r] = t
        kv_read = sum(computed[r] for r in decoding) + len(decoding)  # each attends to its cache and its new token
        dt = cost.seconds_one(sum(chunks.values()), len(decoding), kv_read)
        t += dt
        iterations += 1
        busy += dt
        batch_sum += len(decoding) + len(chunks)
        # 3. outputs: a decoding request and a request whose prefill completed each emit one token
        for r in decoding:
            computed[r] += 1
        emitting = decoding + [r for r, c in chunks.items() if computed[r] + c >= to_prefill[r]]
        for r, c in chunks.items():
            computed[r] += c
        for r in emitting:
            generated[r] += 1
            if first[r] is None:
                first[r] = t
            if generated[r] == output[r]:
                finish[r] = t
                running.remove(r)
                free += blocks(computed[r])
                done += 1
                clients.completed(r, t)
    settings = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                "kv_tokens": kv_tokens, "block_size": block_size, "concurrency": concurrency, "waves": waves}
    return BatchingResult("continuous", workload.name, cost.label, settings, np.array(sent), np.array(scheduled, float),
                          np.array(first, float), np.array(finish), workload.prompt, workload.output, iterations, busy,
                          batch_sum / iterations, 0.0, preemptions)


def _chunk(remaining: int, budget: int, computed: int, free_blocks, block_size: int) -> int:
    """Prefill tokens a request gets this iteration: as many as the prompt left, the token budget and the free blocks
    (plus the room left in its last block) allow."""
    room = math.inf if free_blocks == math.inf else (-(-computed // block_size) + free_blocks) * block_size - computed
    return int(max(0, min(remaining, budget, room)))


# --------------------------------------------------------------------------------------------------------------
# Simulated vs measured
# --------------------------------------------------------------------------------------------------------------


def compare_with_measured(simulated: BatchingResult | dict, measured: dict,
                          keys: tuple[str, ...] = COMPARED) -> list[dict]:
    """Rows of (metric, simulated, measured, simulated / measured) for the keys both report.

    `measured` is the load generator's metrics (`llmlab.serving.bench` summarize(): vLLM's names, times in ms);
    keys missing or None on either side are skipped. A ratio near 1 says the step-cost model and the scheduler
    describe the server; run the simulation with the same requests, concurrency and waves as the bench.
    """
    simulated = simulated.summary() if isinstance(simulated, BatchingResult) else simulated
    rows = []
    for key in keys:
        s, m = simulated.get(key), measured.get(key)
        if s is not None and m is not None:
            rows.append({"metric": key, "simulated": float(s), "measured": float(m),
                         "ratio": float(s) / float(m) if m else math.nan})
    if not rows:
        raise ValueError(f"the measured run shares no metric with the simulation; expected some of {', '.join(keys)}")
    return rows


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


