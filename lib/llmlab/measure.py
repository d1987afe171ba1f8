"""Memory measured on a real model, to set beside what `llmlab.memory` predicts (chapters 01–02).

- `state_dict_bytes`: the bytes of every parameter and buffer, grouped the way the planner groups them.
- `kv_cache_bytes_of`: the bytes of the K and V tensors a real `generate()` call leaves in its cache.
- `peak_memory`: the peak of a block of code — CUDA allocator peak on a GPU, resident set size on a CPU.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import threading
import time
from dataclasses import dataclass, field

import torch


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
