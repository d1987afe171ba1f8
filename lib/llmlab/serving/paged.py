"""PagedAttention's block manager, simulated: where KV-cache memory goes under contiguous reservation and under pages.

Paper: Kwon et al., "Efficient Memory Management for Large Language Model Serving with PagedAttention", SOSP 2023
(arXiv 2309.06180): §3 and Fig. 2-3 (reserved slots, internal and external fragmentation), §4.2-4.5 (block tables,
allocation on demand, recompute preemption). Reference implementation: vLLM's KV cache manager
(vllm/v1/core/kv_cache_manager.py, block_pool.py, sched/scheduler.py): one pool of fixed-size blocks, one block table
per request, first-come-first-served admission that stops at the first request that does not fit, and, when a running
request needs a block and none is free, preemption of the last admitted request, whose tokens are recomputed later.
This module mirrors that accounting (how many blocks, when), not vLLM's code.

Two ways to hold a request's KV cache in a pool of M token slots:
    contiguous  R slots reserved at admission, in one piece (first fit): R = max_model_len ("max": static engines,
                transformers' static cache), the power of two at or above the final length ("pow2"), or the final
                length itself ("oracle": needs the output length in advance, which no server knows)
    paged       blocks of B slots, taken as the sequence grows: n tokens hold ceil(n / B) blocks

Time runs in decode steps. A request (prompt p, output o, final length L = p + o) admitted at step s stores p + j
tokens during its j-th step, j = 1 .. o. During each step every slot of the pool is one of:
    used        holds one token's K and V
    reserved    allocated to a request that will fill it later (contiguous: L - n; paged: the rest of the last
                block, up to L)
    internal    allocated and never filled (contiguous: R - L; paged: B ceil(L / B) - L, while in the last block)
    external    free while the next request waits for memory it cannot get (no hole of R slots, or fewer free blocks
                than its prompt needs): memory that exists but serves no one
    idle        free with nobody waiting for memory (not waste: no demand)
    waste fraction = (reserved + internal + external) / (used + reserved + internal + external), summed over steps.
The paper (Fig. 2) finds 20.4-38.2 % of the KV memory holding tokens in earlier systems and 96.3 % in vLLM; the
guide (§1) repeats it as "fragmentation waste from 60-80 % down to under 4 %".

`simulate` is event-driven: it jumps from one completion, arrival or preemption to the next, adds each request's
counts over its life in closed form when it is admitted, and keeps the blocks of all running requests as a histogram
over B residues, so an event costs O(log N + B) whatever the number of tokens (100,000 ShareGPT-like requests in
about 2 s on a 2-core CPU). `simulate_stepwise` is the same scheduler one token at a time over an explicit
`BlockManager` (small traces, drawings, and the test that both agree exactly). `lifetime_waste` is the closed form
with an unlimited pool (no queueing, no external fragmentation), vectorized over requests, for sweeps.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

RESERVATIONS = ("max", "pow2", "oracle")  # how a contiguous engine sizes each request's reservation
SCHEMES = ("paged", "contiguous")
DEFAULT_BLOCK_SIZE = 16  # vLLM's CacheConfig.DEFAULT_BLOCK_SIZE (vllm/config/cache.py); TensorRT-LLM's
# KvCacheConfig.tokens_per_block defaults to 32 (tensorrt_llm/llmapi/llm_args.py)
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's max_num_seqs for the V0 engine (1024 for V1 in vllm/engine/arg_utils.py at 001999d)

# --------------------------------------------------------------------------------------------------------------
# Request traces
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthDistribution:
    """A family of request lengths: lognormal prompt and output lengths with these means."""

    name: str  # key in DISTRIBUTIONS
    prompt_mean: float  # mean prompt tokens
    output_mean: float  # mean generated tokens
    sigma: float  # spread: standard deviation of log(length)
    source: str  # where the means come from


DISTRIBUTIONS: dict[str, LengthDistribution] = {
    "sharegpt": LengthDistribution("sharegpt", 161.3, 338.0, 1.0,
                                   "ShareGPT conversations: means of Kwon et al. 2023, Fig. 11a; lognormal shape assumed"),
    "alpaca": LengthDistribution("alpaca", 19.3, 58.5, 0.7,
                                 "Alpaca instructions: means of Kwon et al. 2023, Fig. 11b; lognormal shape assumed"),
    "rag": LengthDistribution("rag", 3000.0, 250.0, 0.4,
                              "retrieval-augmented prompts: long inputs, short answers (illustrative, not measured)"),
    "uniform": LengthDistribution("uniform", 0.0, 0.0, 0.0,
                                  "prompt and output each uniform in [1, max_model_len / 2]: the worst case for "
                                  "contiguous reservation is not this, it is short requests"),
}


@dataclass(frozen=True)
class Trace:
    """Requests to serve: their lengths and arrival steps (numpy arrays of one length N)."""

    prompt: np.ndarray  # [N] int64, prompt tokens (>= 1)
    output: np.ndarray  # [N] int64, tokens generated (>= 1)
    arrival: np.ndarray  # [N] int64, decode step from which the request may be admitted (0: all at once)
    name: str = "trace"  # where it came from

    @property
    def final(self) -> np.ndarray:
        """[N] final lengths L = prompt + output."""
        return self.prompt + self.output

    def __len__(self) -> int:
        return len(self.prompt)


def synthetic_trace(requests: int, distribution: str = "sharegpt", max_model_len: int = 4096, seed: int = 0,
                    arrival_rate: float | None = None) -> Trace:
    """`requests` requests with lengths from DISTRIBUTIONS[distribution], clipped so that L <= max_model_len.

    arrival_rate: requests per decode step (Poisson arrivals); None = all arrive at step 0 (a backlog).
    """
    _check_positive(requests=requests, max_model_len=max_model_len)
    if max_model_len < 2:
        raise ValueError(f"max_model_len must be at least 2 (one prompt and one output token), not {max_model_len}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown length distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)} "
                         "or pass your own lengths to trace_from_lengths")
    rng = np.random.default_rng(seed)
    shape = DISTRIBUTIONS[distribution]
    if distribution == "uniform":
        half = max(1, max_model_len // 2)
        prompt = rng.integers(1, half + 1, requests)
        output = rng.integers(1, half + 1, requests)
    else:
        prompt = _lognormal(rng, shape.prompt_mean, shape.sigma, requests)
        output = _lognormal(rng, shape.output_mean, shape.sigma, requests)
    prompt = np.minimum(prompt, max_model_len - 1)
    output = np.minimum(output, max_model_len - prompt)
    return Trace(prompt.astype(np.int64), output.astype(np.int64), _arrivals(rng, requests, arrival_rate),
                 f"{distribution} x {requests}, seed {seed}")


def trace_from_lengths(prompt, output, arrival=None, max_model_len: int | None = None, name: str = "lengths") -> Trace:
    """A trace from your own lengths (sequences of ints); refuses lengths that cannot be served."""
    prompt, output = np.asarray(prompt), np.asarray(output)
    if prompt.ndim != 1 or prompt.shape != output.shape or len(prompt) == 0:
        raise ValueError(f"prompt and output must be two non-empty lists of the same length, not shapes "
                         f"{prompt.shape} and {output.shape}")
    for label, values in (("prompt", prompt), ("output", output)):
        if not np.issubdtype(values.dtype, np.integer) or values.min() < 1:
            raise ValueError(f"{label} lengths must be integers >= 1; the first bad one is at index "
                             f"{_first_bad(values)}")
    arrival = np.zeros(len(prompt), np.int64) if arrival is None else np.asarray(arrival)
    if arrival.shape != prompt.shape or not np.issubdtype(arrival.dtype, np.integer) or arrival.min() < 0:
        raise ValueError("arrival must be one integer step >= 0 per request")
    if max_model_len is not None:
        too_long = np.flatnonzero(prompt + output > max_model_len)
        if len(too_long):
            raise ValueError(f"{len(too_long)} request(s) are longer than max_model_len {max_model_len} (the first: "
                             f"#{too_long[0]}, {prompt[too_long[0]] + output[too_long[0]]} tokens); raise "
                             "max_model_len or drop them (a server rejects them)")
    return Trace(prompt.astype(np.int64), output.astype(np.int64), arrival.astype(np.int64), name)


def _lognormal(rng, mean: float, sigma: float, size: int) -> np.ndarray:
    mu = math.log(mean) - sigma**2 / 2  # E[exp(X)] = exp(mu + sigma^2 / 2) = mean
    return np.maximum(1, np.rint(rng.lognormal(mu, sigma, size))).astype(np.int64)


def _arrivals(rng, requests: int, rate: float | None) -> np.ndarray:
    if rate is None:
        return np.zeros(requests, np.int64)
    if not rate > 0:
        raise ValueError(f"arrival_rate is requests per decode step and must be > 0, not {rate}")
    return np.floor(np.cumsum(rng.exponential(1 / rate, requests))).astype(np.int64)


def _first_bad(values: np.ndarray) -> int:
    if not np.issubdtype(values.dtype, np.integer):
        return 0
    return int(np.flatnonzero(values < 1)[0])


# --------------------------------------------------------------------------------------------------------------
# Reservations and the closed forms
# --------------------------------------------------------------------------------------------------------------


def reservation_sizes(final: np.ndarray, reservation: str, max_model_len: int) -> np.ndarray:
    """[N] slots a contiguous engine reserves per request of final length L."""
    if reservation == "max":
        return np.full_like(final, max_model_len)
    if reservation == "pow2":
        return np.minimum(2 ** np.ceil(np.log2(final)).astype(np.int64), max_model_len)
    if reservation == "oracle":
        return final.copy()
    raise ValueError(f"unknown reservation {reservation!r}; choose one of {', '.join(RESERVATIONS)}")


def _ceil_div(n, B):
    return -(-n // B)


def _ceil_sum(m, B):
    """S(m) = sum over n = 1 .. m of ceil(n / B), elementwise: with m = q B + r, S = B q (q + 1) / 2 + r (q + 1)."""
    q, r = divmod(m, B)  # works on ints and on numpy arrays alike
    return B * q * (q + 1) // 2 + r * (q + 1)


def _life_paged(tokens: int, L: int, B: int) -> tuple[int, int, int]:
    """(used, allocated, internal) token-steps of a request growing from `tokens` stored to L, in blocks of B.

    Step j (1 .. L - tokens) holds tokens + j tokens in ceil((tokens + j) / B) blocks; ints or numpy arrays.
    """
    o = L - tokens
    last = -(-L // B)  # the last block's number, 1-based
    start = B * (last - 1)  # tokens before the last block
    in_last = L - (tokens + start + abs(tokens - start)) // 2  # L - max(tokens, start): steps in the last block
    return o * tokens + o * (o + 1) // 2, B * (_ceil_sum(L, B) - _ceil_sum(tokens, B)), in_last * (B * last - L)


def _life_contiguous(tokens: int, L: int, R: int) -> tuple[int, int, int]:
    """(used, allocated, internal) token-steps of a request growing from `tokens` to L inside R reserved slots."""
    o = L - tokens
    return o * tokens + o * (o + 1) // 2, o * R, o * (R - L)


def lifetime_waste(trace: Trace, block_size: int = DEFAULT_BLOCK_SIZE, reservation: str = "max",
                   max_model_len: int | None = None) -> dict:
    """Waste of each scheme when the pool is unlimited: every request admitted at once, no external fragmentation.

    Closed forms summed over each request's o steps (vectorized over requests; milliseconds for 10**6 requests).
    """
    _check_positive(block_size=block_size)
    max_model_len = max_model_len or int(trace.final.max())
    p, L = trace.prompt, trace.final
    used, paged_allocated, paged_internal = (int(x.sum()) for x in _life_paged(p, L, block_size))
    _, contiguous_allocated, contiguous_internal = (
        int(x.sum()) for x in _life_contiguous(p, L, reservation_sizes(L, reservation, max_model_len)))
    return {
        "used": used,
        "paged": _fractions(used, paged_allocated - used - paged_internal, paged_internal, 0),
        "contiguous": _fractions(used, contiguous_allocated - used - contiguous_internal, contiguous_internal, 0),
        "block_size": block_size, "reservation": reservation, "max_model_len": max_model_len,
    }


def _fractions(used: int, reserved: int, internal: int, external: int) -> dict:
    occupied = used + reserved + internal + external
    return {"waste_fraction": (occupied - used) / occupied, "reserved_fraction": reserved / occupied,
            "internal_fraction": internal / occupied, "external_fraction": external / occupied}


# --------------------------------------------------------------------------------------------------------------
# Allocators
# --------------------------------------------------------------------------------------------------------------


class BlockManager:
    """vLLM's block manager in miniature: a queue of free physical blocks and one block table per request."""

    def __init__(self, num_blocks: int, block_size: int):
        self.block_size = block_size  # B: token slots per block
        self.free_blocks = deque(range(num_blocks))  # physical block ids, taken from the left, returned to the right
        self.tables: dict[int, list[int]] = {}  # request -> its physical blocks, in logical order
        self.tokens: dict[int, int] = {}  # request -> tokens stored

    def allocate(self, request: int, tokens: int) -> None:
        """Blocks for a request's first `tokens` tokens (its prompt)."""
        need = _ceil_div(tokens, self.block_size)
        if need > len(self.free_blocks):
            raise MemoryError(f"request {request} needs {need} blocks, {len(self.free_blocks)} free")
        self.tables[request] = [self.free_blocks.popleft() for _ in range(need)]
        self.tokens[request] = tokens

    def append_slot(self, request: int) -> None:
        """One more token; a new block when the last one is full."""
        if self.tokens[request] == self.block_size * len(self.tables[request]):
            if not self.free_blocks:
                raise MemoryError(f"no free block for request {request}")
            self.tables[request].append(self.free_blocks.popleft())
        self.tokens[request] += 1

    def free(self, request: int) -> None:
        self.free_blocks.extend(self.tables.pop(request))
        del self.tokens[request]


class ContiguousAllocator:
    """First-fit allocation of contiguous slot ranges in a pool of `slots` token slots."""

    def __init__(self, slots: int):
        self.holes: list[tuple[int, int]] = [(0, slots)]  # free (start, size), sorted by start
        self.ranges: dict[int, tuple[int, int]] = {}  # request -> its (start, size)

    def allocate(self, request: int, size: int) -> int | None:
        """The start of the first hole of at least `size` slots, now given to `request`; None when none is."""
        for index, (start, length) in enumerate(self.holes):
            if length >= size:
                if length == size:
                    del self.holes[index]
                else:
                    self.holes[index] = (start + size, length - size)
                self.ranges[request] = (start, size)
                return start
        return None

    def free(self, request: int) -> None:
        start, size = self.ranges.pop(request)
        index = bisect.bisect(self.holes, (start, size))
        self.holes.insert(index, (start, size))
        if index + 1 < len(self.holes) and start + size == self.holes[index + 1][0]:  # merge with the next hole
            self.holes[index] = (start, size + self.holes.pop(index + 1)[1])
        if index > 0 and self.holes[index - 1][0] + self.holes[index - 1][1] == start:  # and with the previous
            previous = self.holes[index - 1]
            self.holes[index - 1] = (previous[0], previous[1] + self.holes.pop(index)[1])

    @property
    def free_slots(self) -> int:
        return sum(size for _, size in self.holes)


# --------------------------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SimResult:
    """One scheme serving one trace from one KV pool. Counts are token-steps unless named."""

    scheme: str  # "paged" or "contiguous"
    reservation: str | None  # contiguous: "max", "pow2" or "oracle"; None for paged
    block_size: int | None  # paged: token slots per block; None for contiguous
    kv_tokens: int  # pool size in token slots (vLLM's "GPU KV cache size: N tokens")
    max_model_len: int  # longest request the engine accepts
    max_num_seqs: int  # most requests running at once, whatever the memory
    requests: int  # requests served (all of the trace)
    steps: int  # decode steps from the first arrival to the last completion (makespan)
    busy_steps: int  # steps with at least one request running
    used: int  # token-steps holding a token
    reserved: int  # token-steps allocated and filled later
    internal: int  # token-steps allocated and never filled
    external: int  # token-steps free while the next request waited for memory
    max_concurrency: int  # most requests running during one step
    mean_concurrency: float  # running requests per busy step (= generated tokens per busy step)
    preemptions: int  # requests evicted (paged only: their tokens are recomputed on readmission)
    mean_wait_steps: float  # arrival -> first admission, averaged over requests
    seconds: float  # wall time of the simulation itself
    admitted: np.ndarray = field(repr=False, default=None)  # [N] step of each request's first admission

    @property
    def occupied(self) -> int:
        return self.used + self.reserved + self.internal + self.external

    @property
    def waste_fraction(self) -> float:
        """Share of the occupied KV memory holding no token: (reserved + internal + external) / occupied."""
        return (self.occupied - self.used) / self.occupied

    @property
    def reserved_fraction(self) -> float:
        return self.reserved / self.occupied

    @property
    def internal_fraction(self) -> float:
        return self.internal / self.occupied

    @property
    def external_fraction(self) -> float:
        return self.external / self.occupied

    def to_dict(self) -> dict:
        row = {key: value for key, value in asdict(self).items() if key != "admitted"}
        row.update(waste_fraction=self.waste_fraction, reserved_fraction=self.reserved_fraction,
                   internal_fraction=self.internal_fraction, external_fraction=self.external_fraction)
        return row


def simulate(trace: Trace, kv_tokens: int, scheme: str = "paged", block_size: int = DEFAULT_BLOCK_SIZE,
             max_model_len: int | None = None, reservation: str = "max",
             max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> SimResult:
    """Serve `trace` from a pool of `kv_tokens` token slots with one scheme; event-driven, O(log N + B) per event."""
    setup = _Setup.checked(trace, kv_tokens, scheme, block_size, max_model_len, reservation, max_num_seqs)
    start = time.perf_counter()
    state = _State(setup)
    while state.finished < len(trace):
        state.admit()
        if not state.running:
            state.idle_until_next_arrival()
            continue
        preempted = state.preempt_until_next_step_fits()
        state.advance(1 if preempted else state.horizon())
    return state.result(time.perf_counter() - start)


@dataclass
class _Counts:
    """Token-steps of each kind, summed over decode steps (see the module docstring)."""

    used: int = 0
    reserved: int = 0
    internal: int = 0
    external: int = 0


def simulate_stepwise(trace: Trace, kv_tokens: int, scheme: str = "paged", block_size: int = DEFAULT_BLOCK_SIZE,
                      max_model_len: int | None = None, reservation: str = "max",
                      max_num_seqs: int = DEFAULT_MAX_NUM_SEQS, snapshot_steps: tuple[int, ...] = ()):
    """The same scheduler one step and one token at a time over explicit allocators: slow, plain, for small traces.

    Returns (SimResult, snapshots): snapshots[step] = {request: {"tokens": stored, "final": L, "blocks": its physical
    blocks in logical order (paged) or "range": its (start, size) slots (contiguous)}} as the pool stood during that
    step, for each step in `snapshot_steps`.
    """
    setup = _Setup.checked(trace, kv_tokens, scheme, block_size, max_model_len, reservation, max_num_seqs)
    start = time.perf_counter()
    B, paged, L, R = block_size, scheme == "paged", trace.final, setup.reservations
    blocks = BlockManager(kv_tokens // B, B) if paged else None
    slots = None if paged else ContiguousAllocator(kv_tokens)
    stored: dict[int, int] = {}  # running request -> tokens stored (the contiguous scheme keeps no table)
    waiting = deque(np.argsort(trace.arrival, kind="stable").tolist())
    prefill = trace.prompt.copy()  # tokens to store on (re)admission: the prompt, then everything computed so far
    admitted = np.full(len(trace), -1, np.int64)
    running: list[int] = []  # in admission order
    counts, snapshots = _Counts(), {}
    t = int(trace.arrival.min())
    first, finished, preemptions, max_running, busy, running_steps = t, 0, 0, 0, 0, 0

    def tokens(q: int) -> int:
        return blocks.tokens[q] if paged else stored[q]

    def next_step_blocks() -> int:  # blocks the running requests take at the next step
        return sum(1 for q in running if blocks.tokens[q] % B == 0)

    while finished < len(trace):
        # 1. admission, first come first served, stopping at the first request the memory cannot take
        blocked = False
        while waiting and trace.arrival[waiting[0]] <= t and len(running) < max_num_seqs:
            r = waiting[0]
            if paged:
                if _ceil_div(prefill[r] + 1, B) > len(blocks.free_blocks) - next_step_blocks():
                    blocked = True
                    break
                blocks.allocate(r, int(prefill[r]))
            else:
                if slots.allocate(r, int(R[r])) is None:
                    blocked = True
                    break
                stored[r] = int(prefill[r])
            waiting.popleft()
            running.append(r)
            if admitted[r] < 0:
                admitted[r] = t
        if not running:
            t = int(trace.arrival[waiting[0]])
            continue
        # 2. preemption: evict the last admitted until every running request has room for its next token
        while paged and next_step_blocks() > len(blocks.free_blocks):
            victim = running.pop()
            prefill[victim] = blocks.tokens[victim]
            blocks.free(victim)
            waiting.appendleft(victim)
            preemptions += 1
        # 3. one decode step: every running request stores one more token
        for q in running:
            if paged:
                blocks.append_slot(q)
            else:
                stored[q] += 1
        # 4. what each slot holds during this step
        for q in running:
            n, final = tokens(q), int(L[q])
            counts.used += n
            if paged:
                allocated = B * len(blocks.tables[q])
                internal = allocated - final if allocated >= final else 0  # only once in the last block
            else:
                allocated, internal = int(R[q]), int(R[q]) - final
            counts.internal += internal
            counts.reserved += allocated - n - internal
        if blocked:
            counts.external += B * len(blocks.free_blocks) if paged else slots.free_slots
        if t in snapshot_steps:
            snapshots[t] = {q: {"tokens": tokens(q), "final": int(L[q]),
                                **({"blocks": list(blocks.tables[q])} if paged else {"range": slots.ranges[q]})}
                            for q in running}
        max_running = max(max_running, len(running))
        busy += 1
        running_steps += len(running)
        # 5. completions
        for q in [q for q in running if tokens(q) == L[q]]:
            if paged:
                blocks.free(q)
            else:
                slots.free(q)
                del stored[q]
            running.remove(q)
            finished += 1
        t += 1
    result = SimResult(scheme, None if paged else reservation, B if paged else None, kv_tokens, setup.max_model_len,
                       max_num_seqs, len(trace), t - first, busy, counts.used, counts.reserved, counts.internal,
                       counts.external, max_running, running_steps / busy, preemptions,
                       float((admitted - trace.arrival).mean()), time.perf_counter() - start, admitted)
    return result, snapshots


@dataclass
class _Setup:
    """A checked simulation request."""

    trace: Trace
    kv_tokens: int
    scheme: str
    block_size: int
    max_model_len: int
    reservation: str
    max_num_seqs: int
    reservations: np.ndarray  # [N] contiguous reservation sizes R (unused for paged)

    @classmethod
    def checked(cls, trace: Trace, kv_tokens: int, scheme: str, block_size: int, max_model_len: int | None,
                reservation: str, max_num_seqs: int) -> "_Setup":
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        _check_positive(kv_tokens=kv_tokens, block_size=block_size, max_num_seqs=max_num_seqs)
        longest = int(trace.final.max())
        max_model_len = longest if max_model_len is None else max_model_len
        _check_positive(max_model_len=max_model_len)
        if longest > max_model_len:
            raise ValueError(f"the trace holds a request of {longest} tokens, more than max_model_len "
                             f"{max_model_len}; raise max_model_len or drop the request (a server rejects it)")
        if scheme == "paged" and _ceil_div(max_model_len, block_size) > kv_tokens // block_size:
            raise ValueError(f"one request of max_model_len {max_model_len} tokens needs "
                             f"{_ceil_div(max_model_len, block_size)} blocks of {block_size} but the pool of "
                             f"{kv_tokens:,} tokens has {kv_tokens // block_size}; lower max_model_len or give the "
                             "KV cache more memory (vLLM refuses to start in this case)")
        reservations = reservation_sizes(trace.final, reservation, max_model_len)
        if scheme == "contiguous" and int(reservations.max()) > kv_tokens:
            raise ValueError(f"one contiguous reservation of {int(reservations.max())} tokens exceeds the pool of "
                             f"{kv_tokens:,} tokens; lower max_model_len or give the KV cache more memory")
        return cls(trace, kv_tokens, scheme, block_size, max_model_len, reservation, max_num_seqs, reservations)


class _State:
    """The event-driven scheduler. Between two events nothing but token counts changes, and those are linear in time:
    a request admitted at step s with p tokens stores n = c + t tokens before step t, with c = p - s. So:
      - each request's counts over its remaining life are added in closed form when it is admitted (`_life`) and
        the part it did not live is taken back if it is preempted;
      - the blocks all running requests hold when they store c + T tokens are Q + sum_x h[x] ceil((x + T) / B),
        with c = B q + x, Q = sum of q and h the histogram of x: O(B) whatever the number of requests;
      - completions come off a heap of finish steps.
    """

    def __init__(self, setup: _Setup):
        self.setup, trace = setup, setup.trace
        self.paged = setup.scheme == "paged"
        self.B = setup.block_size
        self.L = trace.final.tolist()
        self.R = setup.reservations.tolist()
        self.arrival = trace.arrival.tolist()
        self.prefill = trace.prompt.tolist()  # tokens to store on (re)admission
        self.admitted = [-1] * len(trace)
        self.waiting = deque(np.argsort(trace.arrival, kind="stable").tolist())
        self.running: dict[int, int] = {}  # request -> c (it stores c + t tokens before step t), admission order
        self.serial: dict[int, int] = {}  # request -> admission number (tells stale heap entries apart)
        self.finishes: list[tuple[int, int, int]] = []  # heap of (finish step, admission number, request)
        self.admissions = 0
        self.total_blocks = setup.kv_tokens // self.B  # paged pool
        self.histogram = [0] * self.B  # paged: running requests by c mod B
        self.residues = np.arange(self.B, dtype=np.int64)  # x = 0 .. B - 1
        self.quotient = 0  # paged: sum of c // B over running requests
        self.allocator = None if self.paged else ContiguousAllocator(setup.kv_tokens)
        self.reserved_slots = 0  # contiguous: sum of R over running requests
        self.t = min(self.arrival)
        self.start = self.t
        self.finished = self.preemptions = self.max_running = self.busy = self.running_steps = 0
        self.blocked = False
        self.used = self.allocated = self.internal = self.external = 0

    # blocks, in O(B)
    def blocks(self, T: int) -> int:
        """Blocks the running requests hold once they store c + T tokens each: Q + sum_x h[x] ceil((x + T) / B).

        With T = a B + b, ceil((x + T) / B) = a + [x + b >= 1] + [x + b >= B + 1]: two suffix sums of h.
        """
        a, b = divmod(T, self.B)
        h = self.histogram
        return self.quotient + len(self.running) * a + sum(h[max(0, 1 - b):]) + sum(h[self.B + 1 - b:] if b >= 2 else ())

    def block_steps(self, k: int) -> int:
        """Blocks held, summed over the next k steps (t + 1 .. t + k): Q k + sum_x h[x] (S(x + t + k) - S(x + t))."""
        x = self.residues + self.t
        return k * self.quotient + int(np.array(self.histogram) @ (_ceil_sum(x + k, self.B) - _ceil_sum(x, self.B)))

    # the running set
    def _add(self, r: int, tokens: int) -> None:
        c = tokens - self.t
        self.running[r] = c
        self.admissions += 1
        self.serial[r] = self.admissions
        heapq.heappush(self.finishes, (self.t + self.L[r] - tokens, self.admissions, r))
        if self.paged:
            self.histogram[c % self.B] += 1
            self.quotient += c // self.B
        self._count(r, tokens, +1)
        if self.admitted[r] < 0:
            self.admitted[r] = self.t

    def _remove(self, r: int) -> None:
        c = self.running.pop(r)
        del self.serial[r]
        if self.paged:
            self.histogram[c % self.B] -= 1
            self.quotient -= c // self.B
        else:
            self.allocator.free(r)
            self.reserved_slots -= self.R[r]

    def _count(self, r: int, tokens: int, sign: int) -> None:
        """Add (sign +1) or take back (-1) request r's counts from `tokens` stored until it completes."""
        used, allocated, internal = (_life_paged(tokens, self.L[r], self.B) if self.paged
                                     else _life_contiguous(tokens, self.L[r], self.R[r]))
        self.used += sign * used
        self.allocated += sign * allocated
        self.internal += sign * internal

    # the scheduler's moves
    def admit(self) -> None:
        """First come first served; stops at the first arrived request the memory cannot take."""
        self.blocked = False
        B, t = self.B, self.t
        if self.paged:
            free = self.total_blocks - self.blocks(t)
            pending = self.histogram[-t % B]  # blocks the next step takes: requests whose n is a multiple of B
        while self.waiting and self.arrival[self.waiting[0]] <= t and len(self.running) < self.setup.max_num_seqs:
            r = self.waiting[0]
            p = self.prefill[r]
            if self.paged:
                if -(-(p + 1) // B) > free - pending:
                    self.blocked = True
                    break
                free -= -(-p // B)
                pending += -(-(p + 1) // B) - -(-p // B)
            else:
                if self.allocator.allocate(r, self.R[r]) is None:
                    self.blocked = True
                    break
                self.reserved_slots += self.R[r]
            self.waiting.popleft()
            self._add(r, p)

    def idle_until_next_arrival(self) -> None:
        self.t = self.arrival[self.waiting[0]]

    def preempt_until_next_step_fits(self) -> bool:
        """Evict the last admitted request while the next step needs more blocks than are free (paged only)."""
        if not self.paged:
            return False
        B, t = self.B, self.t
        free = self.total_blocks - self.blocks(t)
        evicted = False
        while self.histogram[-t % B] > free:
            victim = next(reversed(self.running))
            tokens = self.running[victim] + t
            self._count(victim, tokens, -1)  # it will not live the rest of its life now
            self._remove(victim)
            free += -(-tokens // B)
            self.prefill[victim] = tokens  # recompute: everything computed so far becomes its prompt
            self.waiting.appendleft(victim)
            self.preemptions += 1
            evicted = True
        return evicted

    def horizon(self) -> int:
        """Steps to the next event: a completion, an arrival that could be admitted, or the last step that fits."""
        while self.serial.get(self.finishes[0][2]) != self.finishes[0][1]:
            heapq.heappop(self.finishes)  # a preempted request's old entry
        k = self.finishes[0][0] - self.t
        if (self.waiting and not self.blocked and len(self.running) < self.setup.max_num_seqs
                and self.arrival[self.waiting[0]] > self.t):
            k = min(k, self.arrival[self.waiting[0]] - self.t)
        if self.paged:
            held = self.blocks(self.t)
            free = self.total_blocks - held
            if free < len(self.running) * -(-k // self.B) and self.blocks(self.t + k) - held > free:
                low, high = 1, k  # fits(1) holds after preempt_until_next_step_fits; fits(k) does not
                while high - low > 1:
                    middle = (low + high) // 2
                    low, high = (middle, high) if self.blocks(self.t + middle) - held <= free else (low, middle)
                k = low
        return k

    def advance(self, k: int) -> None:
        """k decode steps: only the clock moves (the counts were added at admission), then completions."""
        if self.blocked:  # memory free during these steps while the next request waits for it
            if self.paged:
                self.external += self.B * (k * self.total_blocks - self.block_steps(k))
            else:
                self.external += k * (self.setup.kv_tokens - self.reserved_slots)
        self.max_running = max(self.max_running, len(self.running))
        self.busy += k
        self.running_steps += k * len(self.running)
        self.t += k
        while self.finishes and self.finishes[0][0] <= self.t:
            _, serial, r = heapq.heappop(self.finishes)
            if self.serial.get(r) == serial:
                self._remove(r)
                self.finished += 1

    def result(self, seconds: float) -> SimResult:
        setup = self.setup
        admitted = np.array(self.admitted, np.int64)
        return SimResult(setup.scheme, None if self.paged else setup.reservation, self.B if self.paged else None,
                         setup.kv_tokens, setup.max_model_len, setup.max_num_seqs, len(setup.trace),
                         self.t - self.start, self.busy, self.used, self.allocated - self.used - self.internal,
                         self.internal, self.external, self.max_running, self.running_steps / self.busy,
                         self.preemptions, float((admitted - setup.trace.arrival).mean()), seconds, admitted)


# --------------------------------------------------------------------------------------------------------------
# The comparison the guide makes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Paged vs contiguous on the same trace and pool."""

    paged: SimResult  # PagedAttention blocks
    contiguous: SimResult  # one reservation per request
    trace: str  # the trace's name

    @property
    def paged_waste_fraction(self) -> float:
        return self.paged.waste_fraction

    @property
    def contiguous_waste_fraction(self) -> float:
        return self.contiguous.waste_fraction

    def to_dict(self) -> dict:
        return {"trace": self.trace,
                "paged_waste_fraction": self.paged_waste_fraction,
                "contiguous_waste_fraction": self.contiguous_waste_fraction,
                "paged_max_concurrency": self.paged.max_concurrency,
                "contiguous_max_concurrency": self.contiguous.max_concurrency,
                "paged_steps": self.paged.steps, "contiguous_steps": self.contiguous.steps,
                "paged": self.paged.to_dict(), "contiguous": self.contiguous.to_dict()}


def compare(trace: Trace, kv_tokens: int, block_size: int = DEFAULT_BLOCK_SIZE, max_model_len: int | None = None,
            reservation: str = "max", max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> Comparison:
    """The guide's comparison: the same requests and pool, paged blocks of `block_size` vs contiguous reservation."""
    paged = simulate(trace, kv_tokens, "paged", block_size, max_model_len, reservation, max_num_seqs)
    contiguous = simulate(trace, kv_tokens, "contiguous", block_size, max_model_len, reservation, max_num_seqs)
    return Comparison(paged, contiguous, trace.name)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


def read_lengths(path) -> Trace:
    """A trace from a file of your own request lengths: JSON [[prompt, output], ...] or CSV lines `prompt,output`."""
    import json
    from pathlib import Path

    text = Path(path).read_text()
    try:
        pairs = json.loads(text) if text.lstrip().startswith("[") else [
            [int(field) for field in line.split(",")[:2]] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "prompt"))]
        prompt, output = zip(*pairs)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: expected JSON [[prompt, output], ...] or CSV lines 'prompt,output' ({error})")
    return trace_from_lengths(list(prompt), list(output), name=str(path))
