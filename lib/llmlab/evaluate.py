"""Measure a (quantized) model the same way for every method: perplexity, weight bytes, speed, samples.
Peak memory is `llmlab.measure.peak_memory`.

Perplexity follows the GPTQ paper's protocol (arXiv 2210.17323, §4; IST-DASLab/gptq `llama_eval`): cut the evaluation
ids into non-overlapping windows of `seq_len` tokens, score every window on its own, and report exp(mean NLL). One
difference, on purpose: the reference multiplies each window's mean loss by `seq_len` although only `seq_len - 1`
tokens are predicted; here the mean runs over exactly the tokens predicted (the two differ by ~0.2 % at 512).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seq_len: int = 512, batch_size: int = 1, progress: bool = False) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `seq_len` tokens of `ids` ([1, n] or [n])."""
    ids = ids.reshape(-1)  # [1, n] -> [n]
    n_windows = ids.numel() // seq_len
    if n_windows == 0:
        raise ValueError(f"perplexity needs at least seq_len={seq_len} tokens, got {ids.numel()}; "
                         "pass more evaluation tokens or a shorter seq_len")
    windows = ids[: n_windows * seq_len].view(n_windows, seq_len)  # [n] -> [n_windows, seq_len]
    device = _device_of(model)
    total_nll, total_tokens = 0.0, 0
    starts = range(0, n_windows, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="perplexity", unit="batch")
    for start in starts:
        batch = windows[start : start + batch_size].to(device)  # [b, seq_len]
        logits = model(batch, use_cache=False).logits.float()  # [b, seq_len, vocab]
        predicted = logits[:, :-1].reshape(-1, logits.shape[-1])  # [b, seq_len-1, vocab] -> [b*(seq_len-1), vocab]
        targets = batch[:, 1:].reshape(-1)  # [b, seq_len-1] -> [b*(seq_len-1)]
        total_nll += torch.nn.functional.cross_entropy(predicted, targets, reduction="sum").item()
        total_tokens += targets.numel()
    return math.exp(total_nll / total_tokens)


def weight_bytes_of(model) -> int:
    """Bytes the model's parameters occupy in memory now; tied tensors (embedding = lm_head) count once."""
    seen, total = set(), 0
    for parameter in model.parameters():  # parameters() already yields a shared Parameter once
        key = (parameter.device, parameter.data_ptr())
        if key not in seen:
            seen.add(key)
            total += parameter.numel() * parameter.element_size()
    return total


def packed_weight_bytes(model, quantized_names, bits: int, group_size: int | None, scale_bytes: int = 2,
                        zero_point: bool = False, other_bytes: int = 2) -> int:
    """Bytes of a packed checkpoint: the weights of `quantized_names` (Linear module names) at `bits` each plus one
    `scale_bytes` scale (and zero point) per group of `group_size` (None: per output row); every other parameter at
    `other_bytes` (16-bit). Fake-quantized float32 models keep float32 in memory: this is what a kernel would store."""
    quantized_names = set(quantized_names)
    modules = dict(model.named_modules())
    missing = quantized_names - set(modules)
    if missing:
        raise ValueError(f"no modules named {sorted(missing)[:3]} in the model; pass names from model.named_modules()")
    quantized_weights = {modules[name].weight.data_ptr(): modules[name].weight for name in quantized_names}
    total = 0
    for weight in quantized_weights.values():
        out_features, in_features = weight.shape
        n_groups = out_features * (1 if group_size is None else in_features // group_size)
        total += weight.numel() * bits // 8 + n_groups * scale_bytes * (2 if zero_point else 1)
    seen = set(quantized_weights)
    for parameter in model.parameters():
        if parameter.data_ptr() not in seen:
            seen.add(parameter.data_ptr())
            total += parameter.numel() * other_bytes
    return total


@dataclass
class Latency:
    """Speed of greedy generation, as a serving engine reports it."""

    prompt_tokens: int  # tokens in the prompt (prefill)
    new_tokens: int  # tokens generated after the prompt
    time_to_first_token_s: float  # prefill + first token, median over repeats
    decode_tokens_per_s: float  # tokens after the first, per second, median over repeats
    device: str  # where it ran


@torch.no_grad()
def measure_latency(model, prompt_ids: torch.Tensor, new_tokens: int = 32, repeats: int = 3) -> Latency:
    """Time-to-first-token and decode tokens/s of greedy generation from `prompt_ids` ([1, n]), median of `repeats`."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be at least 2 to time the decode phase, got {new_tokens}")
    device = _device_of(model)
    prompt_ids = prompt_ids.to(device)
    options = dict(do_sample=False, pad_token_id=model.config.eos_token_id)

    def timed(n: int) -> float:
        _synchronize(device)
        start = time.perf_counter()
        model.generate(prompt_ids, max_new_tokens=n, min_new_tokens=n, **options)
        _synchronize(device)
        return time.perf_counter() - start

    timed(2)  # warm-up: first calls allocate caches and pick kernels
    first = sorted(timed(1) for _ in range(repeats))[repeats // 2]
    total = sorted(timed(new_tokens) for _ in range(repeats))[repeats // 2]
    return Latency(prompt_ids.shape[1], new_tokens, first, (new_tokens - 1) / max(total - first, 1e-9), str(device))


@torch.no_grad()
def generate_sample(model, tokenizer, prompt: str, max_new_tokens: int = 40, seed: int = 0,
                    temperature: float = 0.0) -> str:
    """The continuation of `prompt` (greedy when temperature is 0, else sampled with `seed`)."""
    torch.manual_seed(seed)
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(_device_of(model))  # [1, n]
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else \
        dict(do_sample=False)
    out = model.generate(ids, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id, **sampling)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
