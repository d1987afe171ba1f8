"""Tensor parallelism measured: Llama-3.1-8B (random bf16 weights) split Megatron-style over 2 GPUs (chapters 03, 10).

Launch on a machine with 2 GPUs (one process per GPU, NCCL; the script also sets the three variables itself):
    PYTHONPATH=lib NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
        python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/gpu_tensor_parallel.py --out DIR
Smoke test on a CPU (gloo; the embedded model has 9 heads, so 3 processes; tests/test_parallel.py runs it):
    PYTHONPATH=lib python -m torch.distributed.run --standalone --nproc-per-node 3 benchmarks/gpu_tensor_parallel.py \
        --device cpu --model smollm2-135m --quick --out /tmp/tp

The split is `llmlab.parallel.shard_model` in the planner's layout (vocab-parallel embedding and lm_head). Every rank
builds the full model from its config (same seed, then broadcast from rank 0 so all hold the same numbers), and:
  1. times NCCL all-reduces of 8 KiB to 1 GiB (bus bandwidth as nccl-tests defines it: S / t x 2 (n - 1) / n);
  2. TP=1, rank 0 alone (the others wait): the logits and greedy tokens of a short prompt (the reference), the
     time of one eager decode step at each batch, and generate()'s tokens/s (eager; static cache compiled on a GPU);
  3. splits the model, then reloads the shards into fresh allocator segments (as an engine loading its shards
     would have them; splitting in place leaves the full matrices' freed space as holes between the shards):
     weight bytes per GPU (allocator and parameters). Before all that, the CUDA context and what NCCL adds to it
     (outside the allocator, cudaMemGetInfo before and after the first collective, and after the sweep), with a
     summary of NCCL's own log of its channels and buffers (NCCL_DEBUG=INFO, subsystems INIT and ALLOC);
  4. TP=n logits and greedy tokens of the same prompt against TP=1 (bf16; `llmlab.parallel.compare_logits`);
  5. prefills of batch x context tokens: per-GPU peak allocated and reserved bytes (and reserved before), memory
     outside PyTorch, KV bytes;
  6. decode at batch 1 and 16: the eager step time; the time inside all-reduces (CUDA events around each call of
     llmlab.parallel.all_reduce, in a second run); a lone all-reduce of the decode message [batch, 1, d] in a loop;
  7. generate()'s tokens/s at TP=n as in 2 (stored first without it: a compile failure loses nothing);
  8. the correctness check again in float32, on a few layers of the same shape: the split only reorders sums, so
     TP=n must match TP=1 to ~1e-6 of the logits' spread, and the greedy tokens must all agree.
Only raw measurements are stored (data/results/gpu-tensor-parallel-<gpu>.json, rank 0); the notebooks set the
planner beside them with `llmlab.parallel.compare_with_plan` and `compare_communication`.
"""

from __future__ import annotations

import os

# NVLink multicast off before anything initializes NCCL: on the lent machines a program using it can take the
# host's shared GPUs out of service (device README, KINDS.md)
NCCL_SAFETY = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NCCL_SAFETY)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from llmlab import parallel  # noqa: E402
from llmlab.measure import kv_cache_bytes_of, reload_weights  # noqa: E402
from llmlab.memory import GiB, plan  # noqa: E402
from llmlab.parallel import (PRECISIONS, WHOLE_BATCH, check_summary, compare_communication,  # noqa: E402
                             compare_logits, compare_with_plan, greedy_decode, planned_model, shard_model)
from llmlab.results import save_result  # noqa: E402
from llmlab.zoo import random_model  # noqa: E402

WARMUP_STEPS = 3  # decode steps run before timing


@dataclass(frozen=True)
class Settings:
    """What one run measures."""

    points: tuple[tuple[int, int], ...]  # (batch, context) prefills for the memory comparison
    decode_batches: tuple[int, ...]  # batches for the decode timings
    prompt: int  # tokens per sequence before decoding
    steps: int  # decode steps timed
    sweep_bytes: tuple[int, ...]  # all-reduce message sizes for the bandwidth sweep
    check_tokens: int  # prompt length and greedy tokens of the TP=1 vs TP=n check
    generate_modes: tuple[str, ...]  # "eager" generate(); "static": static cache, compiled (CUDA graphs)
    fp32_layers: int  # decoder layers of the float32 correctness check (the model's shape, fewer layers)
    overrides: tuple[tuple[str, int], ...] = ()  # config fields changed from the catalog model's (stored with the run)


FULL = Settings(points=((1, 1024), (1, 8192), (1, 32768), (8, 4096), (32, 2048), (16, 8192)),  # as gpu_memory_anatomy
                decode_batches=(1, 16), prompt=128, steps=32, sweep_bytes=tuple(2**k for k in range(13, 31, 2)),
                check_tokens=16, generate_modes=("eager", "static"), fp32_layers=4)
QUICK = Settings(points=((1, 32), (2, 64)), decode_batches=(1, 2), prompt=16, steps=4,
                 sweep_bytes=(2**13, 2**17, 2**20), check_tokens=8, generate_modes=("eager",), fp32_layers=1,
                 overrides=(("num_hidden_layers", 2),))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def outside_pytorch_bytes(device: torch.device) -> int | None:
    """GPU memory in use that PyTorch's allocator did not reserve: CUDA context, cuBLAS, NCCL buffers (None on CPU)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


NCCL_LOG_PATTERNS = {  # what to count in NCCL's INFO log: name -> regular expression (a size in bytes, if any)
    "shareable_buffers": r"Allocated shareable buffer \S+ size (\d+)",  # cuMem buffers: channel FIFOs, ...
    "cuda_allocations": r"Cuda Alloc Size (\d+)",
    "connections": r"Channel \d+/\d+ : .* via ",  # one line per channel and peer connected
}


def nccl_log_summary(path: Path) -> dict | None:
    """NCCL's INFO log of this rank, counted: its version, the line that gives its channel counts, and per pattern
    of NCCL_LOG_PATTERNS the number of lines and the bytes they name (None when NCCL wrote no log)."""
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    version = re.search(r"NCCL version (\S+)", text)
    channels = re.search(r"[^\n]*coll channels[^\n]*", text)
    summary = {"version": version.group(1) if version else None,
               "channels_line": channels.group(0).split("NCCL INFO ")[-1].strip() if channels else None}
    for name, pattern in NCCL_LOG_PATTERNS.items():
        found = re.findall(pattern, text)
        sizes = re.compile(pattern).groups  # patterns without a group count lines only
        summary[name] = {"lines": len(found), "bytes": sum(int(size) for size in found) if sizes else None}
    return summary


def token_ids(batch: int, tokens: int, vocab: int, device: torch.device) -> torch.Tensor:
    """The same random ids on every rank (a seeded CPU generator): [batch, tokens]."""
    generator = torch.Generator().manual_seed(batch * 100_003 + tokens)
    return torch.randint(0, vocab, (batch, tokens), generator=generator).to(device)


# --------------------------------------------------------------------------------------------------------------
# Communication
# --------------------------------------------------------------------------------------------------------------


def slowest_rank(seconds: float, device: torch.device) -> float:
    """The largest of every rank's `seconds` (a collective ends when its slowest rank does)."""
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.item()


def lone_allreduce_seconds(numel: int, dtype: torch.dtype, device: torch.device, iterations: int) -> float:
    """Seconds per all-reduce of `numel` elements, back to back (zeros: the values stay finite)."""
    x = torch.zeros(numel, dtype=dtype, device=device)
    for _ in range(3):
        dist.all_reduce(x)
    synchronize(device)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(x)
    synchronize(device)
    return slowest_rank((time.perf_counter() - start) / iterations, device)


def allreduce_sweep(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device, world: int) -> list[dict]:
    rows = []
    element = torch.empty((), dtype=dtype).element_size()
    for size in sizes:
        seconds = lone_allreduce_seconds(size // element, dtype, device, iterations=max(5, min(100, 2**28 // size)))
        rows.append({"bytes": size, "seconds": seconds, "algbw_bytes_per_s": size / seconds,
                     "busbw_bytes_per_s": size / seconds * 2 * (world - 1) / world})
    return rows


class AllReduceTimer:
    """While active, times every call of llmlab.parallel.all_reduce (through which all of the split model's
    all-reduces go): CUDA events around each call on a GPU, the wall clock on a CPU. A call's time includes waiting
    for the other ranks to reach it."""

    def __init__(self, device: torch.device):
        self.device, self.calls = device, []

    def __enter__(self):
        self.original = parallel.all_reduce

        def timed(x, group=None, world_size=1):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                self.original(x, group, world_size)
                end.record()
                self.calls.append((start, end))
            else:
                began = time.perf_counter()
                self.original(x, group, world_size)
                self.calls.append(time.perf_counter() - began)
            return x

        parallel.all_reduce = timed
        return self

    def __exit__(self, *exc) -> None:
        parallel.all_reduce = self.original

    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return sum(start.elapsed_time(end) for start, end in self.calls) / 1e3
        return sum(self.calls)


# --------------------------------------------------------------------------------------------------------------
# Model runs
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def decode_step_seconds(model, ids: torch.Tensor, steps: int, device: torch.device, timer=None) -> float:
    """Seconds per greedy decode step (one token for each of the batch's sequences) after prefilling `ids`."""
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)  # [batch, 1]
    for _ in range(WARMUP_STEPS):
        token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    synchronize(device)
    with timer or contextlib.nullcontext():
        start = time.perf_counter()
        for _ in range(steps):
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        synchronize(device)
        seconds = time.perf_counter() - start
    return seconds / steps


@torch.no_grad()
def generate_tokens_per_s(model, ids: torch.Tensor, new_tokens: int, device: torch.device, mode: str) -> float:
    """Tokens/s per sequence of greedy generate() (the prefill excluded: t(n) - t(1)), as benchmarks/gpu_decode.py."""
    options = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if mode == "static":
        options["cache_implementation"] = "static"  # transformers compiles the step (CUDA graphs on a GPU)

    def timed(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, **options)
        synchronize(device)
        return time.perf_counter() - start

    for _ in range(3 if mode == "static" else 1):  # compilation and CUDA-graph capture happen here
        timed(new_tokens)
    first = min(timed(1) for _ in range(3))
    total = min(timed(new_tokens) for _ in range(3))
    return (new_tokens - 1) / (total - first)


def generate_rates(model, settings: Settings, device: torch.device) -> list[dict]:
    rows = []
    for batch in settings.decode_batches:
        row = {"batch": batch, "prompt": settings.prompt, "new_tokens": settings.steps}
        ids = token_ids(batch, settings.prompt, model.config.vocab_size, device)
        for mode in settings.generate_modes:
            try:
                row[f"{mode}_tokens_per_s"] = generate_tokens_per_s(model, ids, settings.steps, device, mode)
            except Exception as error:  # e.g. a compile failure: keep the other figures, say why
                row[f"{mode}_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            torch._dynamo.reset()
        rows.append(row)
    return rows


@torch.no_grad()
def prefill_memory(model, batch: int, context: int, device: torch.device) -> dict:
    """One prefill that fills a KV cache and keeps the last position's logits, as generate() does."""
    ids = token_ids(batch, context, model.config.vocab_size, device)
    gc.collect()
    row = {"batch": batch, "context": context}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        row["allocated_before_bytes"] = torch.cuda.memory_allocated(device)
        row["reserved_before_bytes"] = torch.cuda.memory_reserved(device)
    dist.barrier()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    synchronize(device)
    row["kv_bytes"] = kv_cache_bytes_of(out.past_key_values)
    if device.type == "cuda":
        row.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(device),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(device),
                   non_pytorch_bytes=outside_pytorch_bytes(device))
    del out, ids
    gc.collect()
    return row


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # parameters() lists tied ones once


def broadcast_parameters(model) -> None:
    """The same numbers on every rank, whatever each rank's random init did (rank 0's)."""
    for tensor in model.parameters():
        dist.broadcast(tensor.data, src=0)


@torch.no_grad()
def check_outputs(model, ids: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of one forward pass over `ids` ([1, tokens, V], float32, on the CPU) and `new_tokens` greedy
    tokens after it ([1, new_tokens], on the CPU); gathered, so identical on every rank of a split model."""
    logits = model(input_ids=ids).logits.float().cpu()
    return logits, greedy_decode(model, ids, new_tokens)[0].cpu()


def fp32_check(name: str, settings: Settings, rank: int, world: int, device: torch.device) -> dict | None:
    """TP=n against TP=1 in float32 on `settings.fp32_layers` layers of the model's shape (rank 0's result)."""
    overrides = {**dict(settings.overrides), "num_hidden_layers": settings.fp32_layers}
    torch.manual_seed(1)
    model = random_model(name, dtype=torch.float32, device=device, attn_implementation="sdpa", **overrides)
    broadcast_parameters(model)
    ids = token_ids(1, settings.check_tokens, model.config.vocab_size, device)
    reference = check_outputs(model, ids, settings.check_tokens) if rank == 0 else None
    dist.barrier()
    shard_model(model, rank, world)
    split = check_outputs(model, ids, settings.check_tokens)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if rank != 0:
        return None
    return {"dtype": "float32", "num_hidden_layers": settings.fp32_layers, "prompt_tokens": settings.check_tokens,
            **compare_logits(reference[0], split[0], reference[1], split[1])}


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default data/results)")
    parser.add_argument("--model", default="llama-3.1-8b", help="catalog name of a Llama-family model")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="small points and few steps (the CPU smoke test)")
    parser.add_argument("--no-static", action="store_true", help="skip the compiled static-cache generate runs")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        print("launch one process per GPU: python -m torch.distributed.run --standalone --nproc-per-node 2 "
              "benchmarks/gpu_tensor_parallel.py ...", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: the stored run is in data/results/; on a CPU use --device cpu --quick",
              file=sys.stderr)
        return 2
    settings = QUICK if args.quick else FULL
    if args.no_static:
        settings = replace(settings, generate_modes=("eager",))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    if args.device == "cuda":
        device, dtype, backend = torch.device("cuda", int(os.environ["LOCAL_RANK"])), torch.bfloat16, "nccl"
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)  # the CUDA context, measured before NCCL adds its buffers
    else:
        device, dtype, backend = torch.device("cpu"), torch.float32, "gloo"
        torch.set_num_threads(1)  # the ranks share the CPU's cores
    nccl_log = Path(args.out or tempfile.gettempdir()) / f"nccl-rank{rank}.log"
    if device.type == "cuda":  # NCCL's own account of its channels and buffers (read back at the end)
        nccl_log.parent.mkdir(parents=True, exist_ok=True)
        nccl_log.unlink(missing_ok=True)
        for key, value in (("NCCL_DEBUG", "INFO"), ("NCCL_DEBUG_SUBSYS", "INIT,ALLOC"),
                           ("NCCL_DEBUG_FILE", str(nccl_log))):
            os.environ.setdefault(key, value)
    mine = {"rank": rank, "context_before_nccl_bytes": outside_pytorch_bytes(device)}
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    mine["outside_after_init_bytes"] = outside_pytorch_bytes(device)  # PyTorch creates NCCL's communicator lazily
    dist.all_reduce(torch.zeros(1, device=device))  # NCCL creates its communicator and buffers here
    synchronize(device)
    if device.type == "cuda":
        mine["nccl_bytes"] = outside_pytorch_bytes(device) - mine["context_before_nccl_bytes"]
        version = torch.cuda.nccl.version()  # a tuple (2, 27, 5) in recent torch, an int in old ones
        mine["nccl_version"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    log = (lambda *parts: print(*parts, flush=True)) if rank == 0 else (lambda *parts: None)

    sweep = allreduce_sweep(settings.sweep_bytes, dtype, device, world)
    mine["outside_after_sweep_bytes"] = outside_pytorch_bytes(device)  # more channels or protocols connected?
    log("all-reduce sweep:", [(row["bytes"], f"{row['busbw_bytes_per_s'] / 1e9:.1f} GB/s") for row in sweep])

    torch.manual_seed(0)
    overrides = dict(settings.overrides)
    model = random_model(args.model, dtype=dtype, device=device, attn_implementation="sdpa", **overrides)
    broadcast_parameters(model)
    vocab, d = model.config.vocab_size, model.config.hidden_size
    check_ids = token_ids(1, settings.check_tokens, vocab, device)

    tp1 = {"weights_parameter_bytes": parameter_bytes(model), "decode": [], "generate": []}
    if rank == 0:  # TP=1 on one GPU, the reference; the other ranks wait at the barrier
        reference = check_outputs(model, check_ids, settings.check_tokens)
        for batch in settings.decode_batches:
            ids = token_ids(batch, settings.prompt, vocab, device)
            tp1["decode"].append({"batch": batch, "prompt": settings.prompt, "steps": settings.steps,
                                  "step_seconds": decode_step_seconds(model, ids, settings.steps, device)})
            log("TP=1 decode", tp1["decode"][-1])
        tp1["generate"] = generate_rates(model, settings, device)
        log("TP=1 generate", tp1["generate"])
    dist.barrier()

    shard_model(model, rank, world)
    gc.collect()
    mine.update(weights_parameter_bytes=parameter_bytes(model), weights_allocated_bytes=reload_weights(model, device))

    split = check_outputs(model, check_ids, settings.check_tokens)
    correctness = None
    if rank == 0:
        correctness = {"dtype": str(dtype).removeprefix("torch."), "prompt_tokens": settings.check_tokens,
                       **compare_logits(reference[0], split[0], reference[1], split[1])}
        log("TP=n vs TP=1:", correctness)

    precision = PRECISIONS[str(dtype).removeprefix("torch.")]
    total_memory = torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else None
    mine["points"] = []
    for batch, context in settings.points:
        planned = plan(planned_model(args.model, overrides), precision, precision, context, batch, tp=world,
                       runtime=WHOLE_BATCH).per_gpu_bytes
        if total_memory and planned > 0.95 * total_memory:  # the same decision on every rank: none waits alone
            mine["points"].append({"batch": batch, "context": context,
                                   "skipped": f"planned {planned / GiB:.1f} GiB > 95 % of {total_memory / GiB:.1f}"})
            continue
        mine["points"].append(prefill_memory(model, batch, context, device))
        log("prefill", mine["points"][-1])

    mine["decode"] = []
    element = torch.empty((), dtype=dtype).element_size()
    for batch in settings.decode_batches:
        ids = token_ids(batch, settings.prompt, vocab, device)
        step = decode_step_seconds(model, ids, settings.steps, device)
        timer = AllReduceTimer(device)
        timed_step = decode_step_seconds(model, ids, settings.steps, device, timer)
        mine["decode"].append({
            "batch": batch, "prompt": settings.prompt, "steps": settings.steps, "step_seconds": step,
            "timed_step_seconds": timed_step, "allreduces_per_step": len(timer.calls) / settings.steps,
            "allreduce_seconds_per_step": timer.seconds() / settings.steps, "message_bytes": batch * d * element,
            "standalone_allreduce_seconds": lone_allreduce_seconds(batch * d, dtype, device, iterations=200)})
        log("TP=n decode", mine["decode"][-1])

    correctness_fp32 = None

    def store(ranks: list[dict]) -> tuple[dict, Path]:
        measurements = {"model": args.model, "overrides": overrides, "dtype": str(dtype).removeprefix("torch."),
                        "tp": world,
                        "vocab_parallel": True, "attn_implementation": "sdpa", "backend": backend,
                        "nccl_environment": {name: os.environ.get(name) for name in NCCL_SAFETY},
                        "allreduce_sweep": sweep, "tp1": tp1, "correctness": correctness,
                        "correctness_fp32": correctness_fp32, "ranks": ranks}
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        slug = "h100" if "H100" in name else "h200" if "H200" in name else "cpu" if name == "cpu" else "gpu"
        environment = " ".join(f"{key}={value}" for key, value in NCCL_SAFETY.items())
        command = (f"PYTHONPATH=lib {environment} python -m torch.distributed.run --standalone --nproc-per-node "
                   f"{world} benchmarks/gpu_tensor_parallel.py {' '.join(argv or sys.argv[1:])}").strip()
        return measurements, save_result(f"gpu-tensor-parallel-{slug}", measurements, command=command,
                                         folder=args.out)

    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    if rank == 0:
        store(ranks)  # stored before the compiled runs, which may fail
    mine["generate"] = generate_rates(model, settings, device)
    log("TP=n generate", mine["generate"])
    dist.all_gather_object(ranks, mine)
    if rank == 0:
        store(ranks)  # stored again before the float32 check
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    correctness_fp32 = fp32_check(args.model, settings, rank, world, device)
    log("TP=n vs TP=1, float32:", correctness_fp32)
    mine["nccl_log"] = nccl_log_summary(nccl_log) if device.type == "cuda" else None
    dist.all_gather_object(ranks, mine)
    if rank == 0:
        report(*store(ranks))
    dist.barrier()
    dist.destroy_process_group()
    return 0


def report(measurements: dict, path: Path) -> None:
    """The short table, last: per-GPU bytes planned vs measured (rank 0), then decode and all-reduce times."""
    print(f"\n{measurements['model']} over tp={measurements['tp']} ({measurements['backend']})")
    for check in (measurements["correctness"], measurements["correctness_fp32"]):
        print(f"TP=n vs TP=1, {check_summary(check)}")
    print(f"{'part (rank 0)':28s} {'batch':>5s} {'context':>7s} {'planned GiB':>11s} {'measured GiB':>12s} "
          f"{'error':>7s}")
    for row in compare_with_plan(measurements):
        if row["rank"] == 0:
            print(f"{row['part']:28s} {row['batch'] or '':>5} {row['context'] or '':>7} "
                  f"{row['planned_bytes'] / GiB:11.3f} {row['measured_bytes'] / GiB:12.3f} {row['error']:+7.1%}")
    print(f"{'batch':>5s} {'TP=1 ms/step':>12s} {'TP=n ms/step':>12s} {'speed-up':>8s} {'all-reduce ms/step':>18s} "
          f"{'share':>6s} {'standalone ms':>13s} {'bandwidth-only ms':>17s}")
    for row in compare_communication(measurements):
        print(f"{row['batch']:5d} {1e3 * (row['tp1_step_seconds'] or 0):12.2f} {1e3 * row['step_seconds']:12.2f} "
              f"{row['speedup'] or 0:8.2f} {1e3 * row['allreduce_seconds_per_step']:18.3f} "
              f"{row['allreduce_share']:6.1%} {1e3 * row['estimate_standalone_seconds']:13.3f} "
              f"{1e3 * row['estimate_bandwidth_seconds']:17.4f}")
    for label, rows in (("TP=1", measurements["tp1"]["generate"]), ("TP=n", measurements["ranks"][0]["generate"])):
        for row in rows:
            rates = ", ".join(f"{key.removesuffix('_tokens_per_s')} {value:.1f} tok/s" for key, value in row.items()
                              if key.endswith("_tokens_per_s"))
            errors = ", ".join(f"{key}: {value}" for key, value in row.items() if key.endswith("_error"))
            print(f"generate {label} batch {row['batch']}: {rates}{'; ' + errors if errors else ''}")
    print(f"stored in {path}")


if __name__ == "__main__":
    sys.exit(main())
