"""Memory measured on a real model, to set beside what `llmlab.memory` predicts (chapters 01–02).

- `state_dict_bytes`: the bytes of every parameter and buffer, grouped the way the planner groups them.
- `kv_cache_bytes_of`: the bytes of the K and V tensors a real `generate()` call leaves in its cache.
- `peak_memory`: the peak of a block of code — CUDA allocator peak on a GPU, resident set size on a CPU.
- `cpu_allocation_peak`: the exact peak of PyTorch's CPU allocator over a block (the profiler's memory events).
- `reload_weights`: a model's tensors moved to fresh GPU allocator segments (after converting or splitting them).
- `compare_anatomy`, `prefill_rows`, `by_point`: stored GPU prefills (benchmarks/gpu_memory_anatomy.py, and per rank
  benchmarks/gpu_tensor_parallel.py through `llmlab.parallel.compare_with_plan`) beside `llmlab.memory.plan`.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import threading
import time
from dataclasses import dataclass, field, replace

import torch

from llmlab.memory import GROWING_CACHE_SLACK, Plan, Runtime, plan


def _group_of(name: str) -> str:
    """Planner group of a parameter name: embedding, lm_head, norm, bias, linear (inside decoder blocks), other."""
    if "embed_tokens" in name or name.endswith("wte.weight"):
        return "embedding"
    if name.startswith("lm_head"):
        return "lm_head"
    if "norm" in name:
        return "norm"
    if name.endswith(".bias"):
        return "bias"
    if name.endswith(".weight") and (name.startswith("layers.") or ".layers." in name):
        return "linear"
    return "other"


def state_dict_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes per planner group, counting each tensor once (tied embeddings share storage), plus 'total'."""
    seen, groups = set(), {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        group = _group_of(name)
        groups[group] = groups.get(group, 0) + tensor.numel() * tensor.element_size()
    groups["total"] = sum(groups.values())
    return groups


def kv_cache_bytes_of(cache) -> int:
    """Bytes of all K and V tensors held by a transformers cache (DynamicCache and its layered variants)."""
    total = 0
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class KVMeasurement:
    batch: int  # sequences generated together
    prompt_tokens: int  # tokens per prompt
    new_tokens: int  # tokens generated per sequence
    cached_tokens: int  # tokens the cache holds per sequence (prompt + new - 1: the last token's K/V is never stored)
    bytes: int  # measured bytes of every K and V tensor
    dtype: str  # the cache tensors' dtype
    shapes: list = field(default_factory=list)  # [batch, kv_heads, tokens, head_dim] of layer 0's K


def measure_generate_kv(model, tokenizer, batch: int = 1, prompt_tokens: int = 32, new_tokens: int = 16) -> KVMeasurement:
    """Run a real greedy `generate()` and measure the K/V tensors its cache holds at the end."""
    if min(batch, prompt_tokens, new_tokens) <= 0:
        raise ValueError("batch, prompt_tokens and new_tokens must be positive")
    ids = torch.randint(100, tokenizer.vocab_size - 100, (batch, prompt_tokens), generator=torch.Generator().manual_seed(0))
    ids = ids.to(model.device)  # [batch, prompt_tokens]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, return_dict_in_generate=True, pad_token_id=tokenizer.eos_token_id)
    cache = out.past_key_values
    keys = cache.layers[0].keys
    return KVMeasurement(batch, prompt_tokens, new_tokens, cache.get_seq_length(), kv_cache_bytes_of(cache),
                         str(keys.dtype).removeprefix("torch."), [list(keys.shape)])


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter: blocks at least this large are mmap-ed, and unmapped when freed


def _release_freed_memory_to_the_os(threshold_bytes: int = 2**20) -> bool:
    """Make glibc return large freed blocks to the OS, so RSS follows the live tensors; False where not glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


@dataclass
class Peak:
    device: str  # "cuda:0" or "cpu"
    before_bytes: int = 0  # allocated (CUDA) or resident (CPU) bytes when the block started
    peak_bytes: int = 0  # the highest value seen inside the block
    seconds: float = 0.0  # wall time of the block
    rss_tracks_tensors: bool | None = None  # CPU: whether freed tensors leave RSS (glibc mmap threshold set)

    @property
    def increase_bytes(self) -> int:
        """What the block itself added at its peak."""
        return self.peak_bytes - self.before_bytes


@contextlib.contextmanager
def peak_memory(device: str | torch.device = "cpu", sample_every_s: float = 0.002):
    """`with peak_memory(device) as peak:` — CUDA allocator peak on a GPU; on a CPU, RSS sampled by a thread.

    On a CPU, glibc keeps freed blocks for reuse and RSS would then count them as live: the first call sets glibc's
    mmap threshold to 1 MiB so that tensors' memory goes back to the OS when freed (`peak.rss_tracks_tensors` says
    whether that worked; elsewhere peaks include the allocator's cache).
    """
    device = torch.device(device)
    gc.collect()
    peak = Peak(str(device))
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        peak.before_bytes = torch.cuda.memory_allocated(device)
        yield peak
        torch.cuda.synchronize(device)
        peak.peak_bytes = torch.cuda.max_memory_allocated(device)
    else:
        peak.rss_tracks_tensors = _release_freed_memory_to_the_os()
        peak.before_bytes = peak.peak_bytes = _rss_bytes()
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak.peak_bytes = max(peak.peak_bytes, _rss_bytes())
                stop.wait(sample_every_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield peak
        finally:
            stop.set()
            sampler.join()
            peak.peak_bytes = max(peak.peak_bytes, _rss_bytes())
    peak.seconds = time.perf_counter() - start


@contextlib.contextmanager
def cpu_allocation_peak():
    """`with cpu_allocation_peak() as peak:` — the most bytes the tensors allocated inside the block held at once on
    the CPU, from the profiler's record of every allocation and free of PyTorch's CPU allocator: exact to the byte,
    unlike RSS (`peak_memory("cpu")`), but slower, since the profiler records every op. Allocations and frees
    inside one op are netted (an op's own temporaries do not show)."""
    from torch.profiler import ProfilerActivity, profile

    peak = Peak("cpu")
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        yield peak
    live = 0
    changes = sorted((event for event in profiler.events() if event.self_cpu_memory_usage),
                     key=lambda event: event.time_range.start)
    for event in changes:  # + what an op allocated (its outputs), - what was freed
        live += event.self_cpu_memory_usage
        peak.peak_bytes = max(peak.peak_bytes, live)
    peak.seconds = time.perf_counter() - start


def reload_weights(model: torch.nn.Module, device: str | torch.device) -> int | None:
    """Move `model` to the CPU and back to the GPU `device`, so that its tensors sit in fresh allocator segments, as a
    checkpoint loaded straight into its final form would: converting or splitting the weights in place frees the old
    tensors around the new ones, and those holes stay reserved (0.6-0.9 GiB per GPU after sharding Llama-3.1-8B over
    2 GPUs, 2026-11-26). Returns the bytes the model's tensors take in the allocator (None off a GPU: nothing done)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    model.to("cpu")
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    model.to(device)
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device) - before


# --------------------------------------------------------------------------------------------------------------
# Stored GPU prefills against the planner
# --------------------------------------------------------------------------------------------------------------

WHOLE_BATCH = Runtime(prefill_chunk=None, allocator_fraction=GROWING_CACHE_SLACK)  # the benchmarks prefill batch x
# context in one pass with transformers' growing cache
PRECISIONS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # torch dtype name -> planner precision
QUANTIZATION_STAGING = {"llmlab.quant.kernels.FP8Linear": 12}  # linear class a stored run used -> its
# Runtime.activation_quantization_bytes: FP8Linear quantizes its input through three fp32 temporaries


def comparison_row(part: str, planned: int, measured: int | None, batch=None, context=None, **labels) -> list[dict]:
    """One compared quantity (none when it was not measured); error = planned / measured - 1 (negative: the planner
    under-predicts)."""
    if measured is None:
        return []
    return [{**labels, "part": part, "batch": batch, "context": context, "planned_bytes": int(planned),
             "measured_bytes": int(measured), "error": planned / measured - 1}]


def prefill_rows(planned: Plan, point: dict, outside_pytorch_bytes: int | None, runtime: Runtime = WHOLE_BATCH,
                 **labels) -> list[dict]:
    """One stored prefill (`point`: batch, context, kv_bytes, peak_allocated_bytes, peak_reserved_bytes) beside the
    plan of the same batch x context on one GPU, one row per quantity:

      "KV cache"        the K/V bytes the cache holds: must be exact
      "allocated peak"  weights + KV + activations + cuBLAS workspace vs the allocator's peak
      "per-GPU total"   the plan's per-GPU bytes vs peak reserved + memory outside PyTorch (`outside_pytorch_bytes`:
                        CUDA context, loaded kernels, NCCL): what nvidia-smi shows at the peak

    `labels` (model, precision, rank, ...) are copied into every row.
    """
    where = dict(batch=point["batch"], context=point["context"], **labels)
    allocated = (planned.per_gpu_weight_bytes + planned.per_gpu_kv_bytes + planned.activation_bytes
                 + runtime.workspace_bytes)
    reserved = point.get("peak_reserved_bytes")
    in_use = reserved + outside_pytorch_bytes if reserved is not None and outside_pytorch_bytes is not None else None
    return (comparison_row("KV cache", planned.per_gpu_kv_bytes, point["kv_bytes"], **where)
            + comparison_row("allocated peak", allocated, point.get("peak_allocated_bytes"), **where)
            + comparison_row("per-GPU total", planned.per_gpu_bytes, in_use, **where))


def run_runtime(run: dict, runtime: Runtime = WHOLE_BATCH) -> Runtime:
    """The runtime a stored run's model ran under: `runtime`, with the activation staging of its W8A8 linears."""
    staging = QUANTIZATION_STAGING.get(run.get("linear"))
    return runtime if staging is None else replace(runtime, activation_quantization_bytes=staging)


def compare_anatomy(measurements: dict, runtime: Runtime = WHOLE_BATCH) -> list[dict]:
    """Every stored prefill of benchmarks/gpu_memory_anatomy.py (last-position logits; all-logits passes and
    out-of-memory points skipped) beside `plan(model, precision, kv_dtype, context, batch)`: per model run (the bf16
    "models", then the "quantized_models" when stored) a "weights" row (planned vs allocated), then `prefill_rows` for
    each point. Rows carry model, precision and kv_dtype. A quantized run's activations are planned with the staging
    of the linear class it ran (`QUANTIZATION_STAGING`).

    Memory outside PyTorch is the point's own `non_pytorch_bytes` when stored; runs made before it was (2026-11-25)
    measured it once per model before that model's first prefill, which misses the kernels loaded by the prefills
    themselves: for those the run's largest value is used (it was taken after the first model's prefills).
    """
    runs = measurements["models"] + measurements.get("quantized_models", [])
    outside_run = max((run.get("context_overhead_bytes") or 0 for run in runs), default=0) or None
    rows = []
    for run in runs:
        precision = run.get("precision") or PRECISIONS[run["dtype"]]
        kv_dtype = run.get("kv_dtype") or PRECISIONS[run["dtype"]]
        labels = dict(model=run["model"], precision=precision, kv_dtype=kv_dtype)
        model_runtime = run_runtime(run, runtime)
        first = plan(run["model"], precision, kv_dtype, 1, 1, runtime=model_runtime)
        rows += comparison_row("weights", first.per_gpu_weight_bytes, run.get("weights_allocated_bytes"), **labels)
        for point in run["points"]:
            if point.get("oom") or point.get("all_logits"):
                continue
            planned = plan(run["model"], precision, kv_dtype, point["context"], point["batch"], runtime=model_runtime)
            outside = point.get("non_pytorch_bytes") or outside_run
            rows += prefill_rows(planned, point, outside, model_runtime, **labels)
    return rows


def by_point(rows: list[dict]) -> list[dict]:
    """Rows of one comparison regrouped, one dict per stored prefill: its labels, batch and context, then for each
    part "<part>: planned", "<part>: measured" (bytes) and "<part>: error". Rows without a batch are left out."""
    points: dict[tuple, dict] = {}
    for row in rows:
        if row["batch"] is None:
            continue
        labels = {key: value for key, value in row.items()
                  if key not in ("part", "planned_bytes", "measured_bytes", "error")}
        entry = points.setdefault(tuple(labels.items()), dict(labels))
        part = row["part"]
        entry.update({f"{part}: planned": row["planned_bytes"], f"{part}: measured": row["measured_bytes"],
                      f"{part}: error": row["error"]})
    return list(points.values())
