"""Serving engines: how vLLM and TensorRT-LLM size their KV cache, and the commands that serve a plan.

Each engine turns the memory left beside the weights into a pool of KV blocks, by its own rule:

    vLLM          kv = gpu_memory_utilization x total - weights - peak activations - non-torch memory [- CUDA graphs]
                  (vllm/v1/worker/gpu_worker.py, determine_available_memory: a profiling forward pass of
                  max_num_batched_tokens tokens gives the peak; non-torch = what the driver reports in use beyond
                  torch's allocations: CUDA context, cuBLAS workspace, NCCL). Then, per GPU
                  num_blocks = kv // (block_size x L x 2 x K x hd x b)       (kv_cache_utils.get_num_blocks)
                  "GPU KV cache size: num_blocks x block_size tokens"
                  "Maximum concurrency for C tokens per request: num_blocks / ceil(C / block_size)x"
                  and it refuses to start when one request of max_model_len does not fit
                  (kv_cache_utils.check_enough_kv_cache_memory).
    TensorRT-LLM  kv = free_gpu_memory_fraction x (memory free once the weights and runtime buffers are in place)
                  (KvCacheConfig.free_gpu_memory_fraction, 0.9 by default; trtllm-serve
                  --kv_cache_free_gpu_memory_fraction), in blocks of tokens_per_block (32 by default,
                  tensorrt_llm/llmapi/llm_args.py).
So vLLM's fraction is of the whole card and its default leaves 10 % unused; TensorRT-LLM's is of what is left and
its default leaves 10 % of that.

The bytes come from `llmlab.memory` (weights per format and per tensor-parallel shard, KV per token, activations of
a prefill chunk, CUDA context), so an engine budget and a `plan` agree by construction.

Command builders (`serve_command`) write what the guide's §7 cheat-sheet writes, with flags checked against the
engines' sources (the files and commits read are in FLAG_SOURCES), and refuse what cannot work: FP8 on a GPU without
it, a max_model_len whose KV cache does not fit, a tensor-parallel size that does not divide the heads.
`GUIDE_FLAG_CHECKS` records, flag by flag, where the guide's commands are out of date.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field

from llmlab.hardware import GPU, gpu as catalog_gpu, supports
from llmlab.memory import (FORMATS, KV_DTYPES, RUNTIME, Runtime, kv_share, weight_share, activation_bytes,
                           kv_bytes_per_token, plan, weight_bytes)
from llmlab.models import ModelSpec, load_spec

GiB = 2**30
ENGINES = ("vllm", "trtllm")

# --------------------------------------------------------------------------------------------------------------
# The engines' defaults and names, as read in their sources
# --------------------------------------------------------------------------------------------------------------

FLAG_SOURCES = {
    "vllm-args": "vllm-project/vllm vllm/engine/arg_utils.py @99d7eb5 (and @001999d, an early-2025 version)",
    "vllm-cache": "vllm-project/vllm vllm/config/cache.py @002f10e",
    "vllm-quant": "vllm-project/vllm vllm/model_executor/layers/quantization/__init__.py (QuantizationMethods, "
                  "several stored versions)",
    "vllm-fp8": "vllm-project/vllm vllm/model_executor/layers/quantization/fp8.py @0071b24",
    "vllm-awq-marlin": "vllm-project/vllm vllm/model_executor/layers/quantization/awq_marlin.py "
                       "(override_quantization_method)",
    "vllm-kv-scales": "vllm-project/vllm vllm/model_executor/layers/quantization/kv_cache.py",
    "vllm-worker": "vllm-project/vllm vllm/v1/worker/gpu_worker.py @0012cf6 (determine_available_memory)",
    "vllm-kv-utils": "vllm-project/vllm vllm/v1/core/kv_cache_utils.py (get_num_blocks, "
                     "get_max_concurrency_for_kv_cache_config, check_enough_kv_cache_memory)",
    "trtllm-build": "NVIDIA/TensorRT-LLM tensorrt_llm/commands/build.py @008b2b8 and tensorrt_llm/plugin/plugin.py "
                    "@035b99e (add_plugin_argument)",
    "trtllm-serve": "NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py @00209af",
    "trtllm-convert": "NVIDIA/TensorRT-LLM examples/models/core/llama/convert_checkpoint.py @368f8f2 (formerly "
                      "examples/llama/convert_checkpoint.py, stored @05316d3)",
    "trtllm-quantize": "NVIDIA/TensorRT-LLM examples/quantization/quantize.py @059c97c",
    "trtllm-legacy": "NVIDIA/TensorRT-LLM tensorrt_llm/_deprecation.py (emit_engine_arch_deprecation)",
    "trtllm-kv": "NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py (KvCacheConfig)",
}

VLLM_GPU_MEMORY_UTILIZATION = 0.9  # EngineArgs default in released vLLM (arg_utils @001999d); vllm/config/cache.py
# on main (@002f10e) documents 0.92: check `vllm serve --help` for your version
VLLM_BLOCK_SIZE = 16  # CacheConfig.DEFAULT_BLOCK_SIZE
VLLM_MAX_NUM_SEQS = 256  # scheduler default on most GPUs (V0; V1 raised it on large GPUs)
VLLM_MAX_NUM_BATCHED_TOKENS = 8192  # tokens of the profiling forward pass on >= 70 GiB GPUs (2048 below)
VLLM_KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")  # part of CacheDType
VLLM_QUANTIZATION = ("awq", "awq_marlin", "fp8", "gptq", "gptq_marlin", "compressed-tensors", "bitsandbytes",
                     "gguf", "modelopt", "experts_int8")  # part of QuantizationMethods; no plain "int8"
TRTLLM_FREE_GPU_MEMORY_FRACTION = 0.9  # KvCacheConfig.free_gpu_memory_fraction and trtllm-serve's default
TRTLLM_TOKENS_PER_BLOCK = 32  # KvCacheConfig.tokens_per_block
TRTLLM_MAX_NUM_TOKENS = 8192  # BuildConfig.max_num_tokens
TRTLLM_QFORMATS = {"fp8": "fp8", "int8": "int8_sq", "int4": "int4_awq"}  # quantize.py --qformat per precision
VLLM_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
FP8_MIN_CAPABILITY = {"vllm": (8, 0), "trtllm": (8, 9)}  # vLLM: Fp8Config.get_min_capability() = 80 (Marlin
# weight-only below 8.9); TensorRT-LLM's FP8 kernels need Ada/Hopper

# --------------------------------------------------------------------------------------------------------------
# Memory budgets
# --------------------------------------------------------------------------------------------------------------


@dataclass
class EngineBudget:
    """How one engine splits one GPU's memory (every byte figure is per GPU of the tensor-parallel group)."""

    engine: str  # "vllm" or "trtllm"
    model: str  # the model's name
    gpu: str  # catalog GPU
    tp: int  # tensor-parallel GPUs
    precision: str  # weight format
    kv_dtype: str  # KV cache element format
    rule: str  # the engine's formula, in words
    fraction: float  # gpu_memory_utilization (of the total) or free_gpu_memory_fraction (of what is free)
    total_memory_bytes: int  # torch's total_memory of one GPU (measured or estimated, see llmlab.hardware)
    weights_bytes: int  # this GPU's shard of the weights
    activation_bytes: int  # peak of the profiling forward pass (max_num_batched_tokens tokens)
    non_torch_bytes: int  # CUDA context, cuBLAS workspace, NCCL buffers
    cudagraph_bytes: int  # memory set aside for CUDA graphs (newer vLLM subtracts an estimate; 0 = not modelled)
    kv_bytes: int  # memory given to the KV cache
    kv_bytes_per_token: int  # one token of one sequence on this GPU (its share of the KV heads)
    block_size: int  # tokens per KV block
    num_blocks: int  # blocks in the pool
    kv_tokens: int  # num_blocks x block_size: vLLM's "GPU KV cache size: N tokens"
    max_model_len: int  # tokens per request the engine accepts
    max_concurrency: float  # num_blocks / ceil(max_model_len / block_size): requests of max_model_len at once
    log: tuple[str, ...] = ()  # the lines the engine prints about it

    def to_dict(self) -> dict:
        return asdict(self)


def vllm_budget(model: str | dict | ModelSpec, gpu: str | GPU, precision: str = "bf16", kv_dtype: str | None = None,
                tp: int = 1, gpu_memory_utilization: float = VLLM_GPU_MEMORY_UTILIZATION,
                max_model_len: int | None = None, block_size: int = VLLM_BLOCK_SIZE,
                max_num_batched_tokens: int = VLLM_MAX_NUM_BATCHED_TOKENS, max_num_seqs: int = VLLM_MAX_NUM_SEQS,
                cudagraph_bytes: int = 0, group_size: int | None = 128, runtime: Runtime = RUNTIME) -> EngineBudget:
    """vLLM's KV-cache budget on one GPU of `tp`, and the two lines it logs at startup.

    Refuses, as vLLM does, when nothing is left for the KV cache or when one request of max_model_len does not fit.
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization is a fraction in (0, 1], not {gpu_memory_utilization}")
    setup = _setup(model, gpu, precision, kv_dtype, tp, max_model_len, block_size, group_size)
    spec, device = setup["spec"], setup["device"]
    requested = int(gpu_memory_utilization * device.usable_memory_bytes)
    activation = _profile_activation(spec, precision, tp, max_num_batched_tokens, max_num_seqs)
    non_torch = _non_torch(tp, runtime)
    kv = requested - setup["weights"] - activation - non_torch - cudagraph_bytes
    rule = (f"{gpu_memory_utilization:g} x {device.usable_memory_bytes / GiB:.2f} GiB - weights - peak activations "
            f"of a {max_num_batched_tokens}-token profiling pass - non-torch memory"
            + (" - CUDA graphs" if cudagraph_bytes else ""))
    budget = _blocks("vllm", setup, gpu_memory_utilization, device, activation, non_torch, cudagraph_bytes, kv, rule)
    if kv <= 0:
        raise ValueError(f"no memory left for the KV cache on {device.name}: {gpu_memory_utilization:g} x "
                         f"{device.usable_memory_bytes / GiB:.1f} GiB = {requested / GiB:.1f} GiB, weights "
                         f"{setup['weights'] / GiB:.1f} GiB + activations {activation / GiB:.2f} GiB + non-torch "
                         f"{non_torch / GiB:.2f} GiB; raise gpu_memory_utilization, quantize the weights or add "
                         "tensor-parallel GPUs")
    _check_one_request(budget, "gpu_memory_utilization")
    budget.log = (f"GPU KV cache size: {budget.kv_tokens:,} tokens",
                  f"Maximum concurrency for {budget.max_model_len:,} tokens per request: {budget.max_concurrency:.2f}x")
    return budget


def trtllm_budget(model: str | dict | ModelSpec, gpu: str | GPU, precision: str = "bf16", kv_dtype: str | None = None,
                  tp: int = 1, free_gpu_memory_fraction: float = TRTLLM_FREE_GPU_MEMORY_FRACTION,
                  max_seq_len: int | None = None, tokens_per_block: int = TRTLLM_TOKENS_PER_BLOCK,
                  max_num_tokens: int = TRTLLM_MAX_NUM_TOKENS, group_size: int | None = 128,
                  runtime: Runtime = RUNTIME) -> EngineBudget:
    """TensorRT-LLM's KV-cache budget on one GPU of `tp`: a fraction of the memory still free after loading."""
    if not 0 < free_gpu_memory_fraction <= 1:
        raise ValueError(f"free_gpu_memory_fraction is a fraction in (0, 1], not {free_gpu_memory_fraction}")
    setup = _setup(model, gpu, precision, kv_dtype, tp, max_seq_len, tokens_per_block, group_size)
    spec, device = setup["spec"], setup["device"]
    activation = _profile_activation(spec, precision, tp, max_num_tokens, 1)
    non_torch = _non_torch(tp, runtime)
    free = device.usable_memory_bytes - setup["weights"] - activation - non_torch
    if free <= 0:
        raise ValueError(f"{spec.name} in {precision} does not fit {device.name}: weights "
                         f"{setup['weights'] / GiB:.1f} GiB + buffers {(activation + non_torch) / GiB:.2f} GiB > "
                         f"{device.usable_memory_bytes / GiB:.1f} GiB; quantize the weights or add tensor-parallel GPUs")
    kv = int(free_gpu_memory_fraction * free)
    rule = (f"{free_gpu_memory_fraction:g} x ({device.usable_memory_bytes / GiB:.2f} GiB - weights - runtime buffers "
            f"for {max_num_tokens} tokens - CUDA context)")
    budget = _blocks("trtllm", setup, free_gpu_memory_fraction, device, activation, non_torch, 0, kv, rule)
    _check_one_request(budget, "free_gpu_memory_fraction")
    budget.log = (f"KV cache: {budget.num_blocks:,} blocks of {tokens_per_block} tokens = {budget.kv_tokens:,} tokens "
                  f"({kv / GiB:.2f} GiB)",)
    return budget


def _setup(model, gpu, precision: str, kv_dtype: str | None, tp: int, max_model_len: int | None, block_size: int,
           group_size: int | None) -> dict:
    """Check the inputs and gather what both budgets need."""
    device = catalog_gpu(gpu)  # refuse an unknown GPU before reading the model
    if precision not in FORMATS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(FORMATS)}")
    kv_dtype = kv_dtype or ("fp32" if precision == "fp32" else "bf16" if precision == "bf16" else "fp16")
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"unknown KV dtype {kv_dtype!r}; choose one of {', '.join(KV_DTYPES)}")
    for name, value in (("tp", tp), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    spec = model if isinstance(model, ModelSpec) else load_spec(model)
    plan(spec, precision, kv_dtype, context=1, batch=1, tp=tp, group_size=group_size)  # refuses a tp that cannot split
    limit = spec.max_position_embeddings
    max_model_len = limit if max_model_len is None else max_model_len
    if isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or max_model_len <= 0:
        raise ValueError(f"max_model_len must be a positive integer, not {max_model_len!r}")
    if limit and max_model_len > limit:
        raise ValueError(f"max_model_len {max_model_len} exceeds {spec.name}'s max_position_embeddings {limit}; "
                         f"use at most {limit} (vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, and quality "
                         "past the trained length is not guaranteed)")
    parts = weight_bytes(spec, precision, group_size).parts
    weights = int(sum(size * weight_share(spec, part, tp) for part, size in parts.items()))
    per_token = int(kv_bytes_per_token(spec, kv_dtype) * kv_share(spec, tp))
    return {"spec": spec, "device": device, "precision": precision, "kv_dtype": kv_dtype, "tp": tp,
            "max_model_len": max_model_len, "block_size": block_size, "weights": weights, "per_token": per_token}


def _profile_activation(spec: ModelSpec, precision: str, tp: int, tokens: int, sequences: int) -> int:
    """Peak of the profiling pass: a prefill of `tokens` tokens, or the sampler's fp32 logits and probabilities of
    `sequences` rows, whichever is larger (an estimate of what vLLM's profile_run allocates)."""
    prefill = activation_bytes(spec, 1, tokens, "fp32" if precision == "fp32" else "fp16", tp)
    sampler = sequences * spec.vocab_size * 4 * 2
    return max(prefill, sampler)


def _non_torch(tp: int, runtime: Runtime) -> int:
    return runtime.cuda_context_bytes + (runtime.nccl_bytes if tp > 1 else 0)


def _blocks(engine: str, setup: dict, fraction: float, device: GPU, activation: int, non_torch: int,
            cudagraph: int, kv: int, rule: str) -> EngineBudget:
    B, per_token, length = setup["block_size"], setup["per_token"], setup["max_model_len"]
    num_blocks = max(kv, 0) // (B * per_token)
    return EngineBudget(engine, setup["spec"].name, device.name, setup["tp"], setup["precision"], setup["kv_dtype"],
                        rule, fraction, device.usable_memory_bytes, setup["weights"], activation, non_torch, cudagraph,
                        kv, per_token, B, num_blocks, num_blocks * B, length, num_blocks / math.ceil(length / B))


def _check_one_request(budget: EngineBudget, knob: str) -> None:
    """vLLM's startup check (kv_cache_utils.check_enough_kv_cache_memory), used for both engines."""
    needed = math.ceil(budget.max_model_len / budget.block_size) * budget.block_size * budget.kv_bytes_per_token
    if needed > budget.kv_bytes:
        estimated = budget.num_blocks * budget.block_size
        raise ValueError(f"to serve one request of max_model_len {budget.max_model_len:,} tokens, "
                         f"{needed / GiB:.2f} GiB of KV cache is needed, more than the {budget.kv_bytes / GiB:.2f} GiB "
                         f"available on {budget.gpu}; the longest that fits is {estimated:,} tokens: lower "
                         f"max_model_len to it, raise {knob}, use an fp8 KV cache or add tensor-parallel GPUs")


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ServeCommand:
    """The commands that serve one plan with one engine, in order, and what to know about them."""

    engine: str  # "vllm" or "trtllm"
    steps: list[tuple[str, list[str]]]  # (what the step does, its argv)
    notes: list[str] = field(default_factory=list)  # kernels used, checkpoints needed, caveats
    budget: EngineBudget | None = None  # the engine's KV budget for this plan

    def text(self) -> str:
        """The commands as shell text, one flag per line like the guide's cheat-sheet."""
        blocks = []
        for what, argv in self.steps:
            lines, current = [], [argv[0]]
            for token in argv[1:]:
                if token.startswith("-"):
                    lines.append(" ".join(current))
                    current = [token]
                else:
                    current.append(shlex.quote(token))
            lines.append(" ".join(current))
            blocks.append(f"# {what}\n" + " \\\n  ".join(lines))
        return "\n\n".join(blocks)

    def to_dict(self) -> dict:
        return {"engine": self.engine, "steps": [{"what": what, "argv": argv} for what, argv in self.steps],
                "text": self.text(), "notes": self.notes,
                "budget": self.budget.to_dict() if self.budget else None}


def serve_command(engine: str, model: str, gpu: str | GPU, precision: str = "bf16", kv_dtype: str | None = None,
                  tp: int = 1, max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                  checkpoint: str | None = None, port: int = 8000, max_batch_size: int | None = None,
                  group_size: int | None = 128) -> ServeCommand:
    """The command(s) serving `model` in `precision` on `tp` x `gpu` with `engine` ("vllm" or "trtllm").

    checkpoint: what the command loads (hub id or path); by default the catalog's hub id for 16-bit and for the
    quantizations the engine does at load time (vLLM fp8, nf4), else a placeholder path to a quantized checkpoint.
    gpu_memory_utilization: vLLM's fraction of the card (default 0.9), or TensorRT-LLM's fraction of free memory.
    Refuses (ValueError) what would not start: a format the GPU cannot run, a KV cache that cannot hold one request
    of max_model_len, a tensor-parallel size that does not divide the heads.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    device = catalog_gpu(gpu)
    if precision not in FORMATS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(FORMATS)}")
    _check_format(engine, precision, kv_dtype, device)
    if engine == "vllm":
        return _vllm_command(model, device, precision, kv_dtype, tp, max_model_len, gpu_memory_utilization,
                             checkpoint, port, group_size)
    return _trtllm_command(model, device, precision, kv_dtype, tp, max_model_len, gpu_memory_utilization, checkpoint,
                           port, max_batch_size, group_size)


def _check_format(engine: str, precision: str, kv_dtype: str | None, device: GPU) -> None:
    """Refuse formats the engine cannot run on this GPU, with what to use instead."""
    here = f"{device.name} is {device.capability_text}"
    if precision == "fp8" and device.compute_capability < FP8_MIN_CAPABILITY[engine]:
        need = ".".join(map(str, FP8_MIN_CAPABILITY[engine]))
        why = ("vLLM's Fp8Config needs >= 8.0 (weight-only Marlin below 8.9)" if engine == "vllm"
               else "TensorRT-LLM's FP8 kernels need Ada or Hopper")
        raise ValueError(f"fp8 needs compute capability >= {need} ({why}); {here}: use int8 (W8A8) or int4 instead")
    if kv_dtype == "fp8" and engine == "trtllm" and device.compute_capability < (8, 9):
        raise ValueError(f"TensorRT-LLM's fp8 KV cache needs compute capability >= 8.9; {here}: use an int8 KV cache "
                         "(quantize.py --kv_cache_dtype int8) or a 16-bit one")
    if "bf16" in (precision, kv_dtype) and not supports(device, "bf16"):
        raise ValueError(f"bfloat16 needs compute capability >= 8.0; {here}: use fp16 (vLLM: --dtype half)")
    if precision == "nf4" and engine == "trtllm":
        raise ValueError("TensorRT-LLM has no bitsandbytes NF4; use int4 (AWQ, quantize.py --qformat int4_awq)")
    if precision == "fp32":
        raise ValueError("serving engines run 16-bit or quantized weights; use bf16 or fp16")


def _vllm_command(model, device, precision, kv_dtype, tp, max_model_len, utilization, checkpoint, port,
                  group_size) -> ServeCommand:
    from llmlab.licensing import hub_id

    spec = load_spec(model)
    utilization = VLLM_GPU_MEMORY_UTILIZATION if utilization is None else utilization
    budget = vllm_budget(spec, device, precision, kv_dtype, tp, utilization, max_model_len, group_size=group_size)
    notes = []
    served = checkpoint or _default_checkpoint(model, precision, "vllm", hub_id)
    argv = ["vllm", "serve", served]
    if precision in VLLM_DTYPES:
        argv += ["--dtype", VLLM_DTYPES[precision]]
    elif precision == "fp8" and checkpoint is None:
        argv += ["--quantization", "fp8"]
        notes.append("--quantization fp8 on a 16-bit checkpoint quantizes the weights to FP8 as they load (one scale "
                     "per tensor, no calibration) and the activations dynamically: 'dynamic FP8' "
                     f"({FLAG_SOURCES['vllm-fp8']})")
        if device.compute_capability < (8, 9):
            notes.append(f"{device.name} ({device.capability_text}) has no FP8 tensor cores: vLLM runs the FP8 weights "
                         "through Marlin as weight-only W8A16: half the weight memory, no FP8 speed-up")
    elif precision == "nf4":
        argv += ["--quantization", "bitsandbytes"]
        notes.append("bitsandbytes quantizes to NF4 while loading; its kernels are slower than AWQ/GPTQ Marlin")
    else:  # int8, int4, or a pre-quantized fp8 checkpoint: vLLM reads the method from the checkpoint's config.json
        kind = {"int8": "an INT8 W8A8 (SmoothQuant) checkpoint in compressed-tensors format, e.g. made with "
                        "llm-compressor (chapter 05)",
                "int4": "an AWQ or GPTQ 4-bit checkpoint (chapters 06-07)",
                "fp8": "an FP8 checkpoint (compressed-tensors or ModelOpt)"}[precision]
        notes.append(f"{served} must be {kind}: vLLM detects the method from its config.json, so no --quantization "
                     "flag (vLLM has no 'int8' method; --quantization awq would force the slow AWQ kernel where "
                     f"awq_marlin runs: {FLAG_SOURCES['vllm-awq-marlin']})")
    if kv_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8"]
        notes.append("an fp8 KV cache without k/v scales in the checkpoint uses scale 1.0 (vLLM warns 'Using KV cache "
                     "scaling factor 1.0 for fp8_e4m3'): check quality, or use a checkpoint with calibrated KV scales")
        if device.compute_capability < (8, 9):
            notes.append(f"below compute capability 8.9 the fp8 KV cache is stored in fp8 and converted to 16-bit in "
                         "the attention kernel: memory saved, no FP8 attention")
    argv += ["--max-model-len", str(budget.max_model_len)]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    if utilization != VLLM_GPU_MEMORY_UTILIZATION:
        argv += ["--gpu-memory-utilization", f"{utilization:g}"]
    if port != 8000:
        argv += ["--port", str(port)]
    notes.append(f"expected at startup: '{budget.log[0]}', '{budget.log[1]}' (planner estimate; vLLM measures it)")
    return ServeCommand("vllm", [("serve (OpenAI-compatible API on port %d)" % port, argv)], notes, budget)


def _trtllm_command(model, device, precision, kv_dtype, tp, max_seq_len, fraction, checkpoint, port, max_batch_size,
                    group_size) -> ServeCommand:
    from llmlab.licensing import hub_id

    spec = load_spec(model)
    fraction = TRTLLM_FREE_GPU_MEMORY_FRACTION if fraction is None else fraction
    budget = trtllm_budget(spec, device, precision, kv_dtype, tp, fraction, max_seq_len, group_size=group_size)
    source = checkpoint or _default_checkpoint(model, precision, "trtllm", hub_id)
    name = spec.name
    ckpt, engine_dir = f"./{name}-{precision}-tp{tp}-ckpt", f"./{name}-{precision}-tp{tp}-engine"
    # the dtype of what stays unquantized: the model's bf16 where the GPU has it, unless fp16 was asked for
    dtype = "bfloat16" if precision != "fp16" and supports(device, "bf16") else "float16"
    notes = []
    if precision in ("fp16", "bf16") and spec.model_type in ("llama", "mistral", "mixtral"):
        step1 = ("convert the Hugging Face checkpoint", [
            "python", "examples/models/core/llama/convert_checkpoint.py", "--model_dir", source,
            "--output_dir", ckpt, "--dtype", dtype, "--tp_size", str(tp)])
    else:
        qformat = TRTLLM_QFORMATS.get(precision, "full_prec")
        argv = ["python", "examples/quantization/quantize.py", "--model_dir", source, "--dtype", dtype,
                "--qformat", qformat]
        if precision == "int4":
            argv += ["--awq_block_size", str(group_size or 128)]
        if kv_dtype == "fp8":
            argv += ["--kv_cache_dtype", "fp8"]
        argv += ["--output_dir", ckpt, "--tp_size", str(tp)]
        step1 = ("quantize (calibrate) and write a TensorRT-LLM checkpoint"
                 if qformat != "full_prec" else "write a TensorRT-LLM checkpoint", argv)
        if qformat != "full_prec":
            notes.append("quantize.py calibrates on cnn_dailymail by default (--calib_dataset, --calib_size 512): it "
                         "needs the dataset or a local copy, and the GPU to run the 16-bit model")
    if kv_dtype == "fp8" and step1[1][1].endswith("convert_checkpoint.py"):
        step1[1].append("--fp8_kv_cache")
    batch = max_batch_size or max(1, min(256, int(budget.max_concurrency)))
    build = ["trtllm-build", "--checkpoint_dir", ckpt, "--output_dir", engine_dir, "--max_batch_size", str(batch),
             "--max_input_len", str(budget.max_model_len - 1), "--max_seq_len", str(budget.max_model_len),
             "--max_num_tokens", str(TRTLLM_MAX_NUM_TOKENS)]
    serve = ["trtllm-serve", engine_dir, "--backend", "tensorrt", "--tokenizer", source, "--port", str(port)]
    if tp > 1:
        serve += ["--tp_size", str(tp)]
    if fraction != TRTLLM_FREE_GPU_MEMORY_FRACTION:
        serve += ["--kv_cache_free_gpu_memory_fraction", f"{fraction:g}"]
    notes += ["the precision is fixed when the checkpoint is written (quantize.py --qformat / --kv_cache_dtype); "
              "trtllm-build has no --use_fp8 flag",
              "trtllm-serve takes the engine directory as its MODEL argument, with --backend tensorrt and a "
              "--tokenizer (an engine holds none); there is no --engine_dir",
              "TensorRT-LLM calls this engine-build workflow legacy: `trtllm-serve <hf model or quantized checkpoint>` "
              f"(PyTorch backend, the default) serves without a build step ({FLAG_SOURCES['trtllm-legacy']})",
              f"expected KV cache: {budget.log[0]} (planner estimate)"]
    return ServeCommand("trtllm", [step1, ("build the engine", build),
                                   ("serve (OpenAI-compatible API on port %d)" % port, serve)], notes, budget)


def _default_checkpoint(model: str, precision: str, engine: str, hub_id) -> str:
    """The catalog's hub id where the engine quantizes at load time (or not at all), else a placeholder path."""
    try:
        original = hub_id(model)
    except LookupError:
        original = model
    loads_itself = precision in ("fp16", "bf16") or (engine == "vllm" and precision in ("fp8", "nf4"))
    if loads_itself or engine == "trtllm":  # TensorRT-LLM's quantize.py starts from the 16-bit model
        return original
    suffix = {"int8": "W8A8-INT8", "int4": "AWQ-INT4", "fp8": "FP8"}[precision]
    return f"./{original.rsplit('/', 1)[-1]}-{suffix}"


# --------------------------------------------------------------------------------------------------------------
# The guide's cheat-sheet (§7) and engine flags (§5), checked against the engines' sources
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagCheck:
    """One flag or command of the guide, as printed, against the engine's source."""

    id: str  # short key (the claims register prefixes it)
    section: str  # the guide's section
    as_printed: str  # the guide's text
    verdict: str  # holds / approximate / wrong
    finding: str  # what the source says
    instead: str  # what to write today
    source: str  # FLAG_SOURCES keys read


GUIDE_FLAG_CHECKS: tuple[FlagCheck, ...] = (
    FlagCheck("vllm-quantization-fp8", "7", "vllm serve … --quantization fp8", "holds",
              "'fp8' is a vLLM quantization method; on a 16-bit checkpoint it quantizes the weights as they load (one "
              "scale per tensor, no calibration data) and the activations dynamically: dynamic FP8, W8A8 from compute "
              "capability 8.9, weight-only (Marlin) on 8.0-8.6, refused below 8.0",
              "--quantization fp8 (or a pre-quantized FP8 checkpoint, no flag)", "vllm-quant vllm-fp8"),
    FlagCheck("vllm-kv-cache-dtype-fp8", "7", "--kv-cache-dtype fp8", "holds",
              "'fp8' (= fp8_e4m3) is one of --kv-cache-dtype's choices; without k/v scales in the checkpoint vLLM uses "
              "1.0 and warns that accuracy may suffer",
              "--kv-cache-dtype fp8, ideally with a checkpoint carrying calibrated KV scales",
              "vllm-cache vllm-kv-scales"),
    FlagCheck("vllm-max-model-len", "7", "--max-model-len 16384", "holds",
              "--max-model-len exists; vLLM refuses to start when one request of that length does not fit the KV "
              "cache, and when it exceeds the model's max_position_embeddings",
              "--max-model-len N with N's KV cache checked against the budget (llmlab serve-cmd does)",
              "vllm-args vllm-kv-utils"),
    FlagCheck("vllm-model-id", "7", "vllm serve mistralai/Mistral-7B-Instruct", "approximate",
              "Mistral publishes its 7B instruct models with a version suffix (-v0.1, -v0.2, -v0.3); the id as printed "
              "names none (not checked against the hub: no hub access here)",
              "vllm serve mistralai/Mistral-7B-Instruct-v0.3", "vllm-args"),
    FlagCheck("trtllm-convert-checkpoint", "7",
              "python examples/llama/convert_checkpoint.py --model_dir … --output_dir … --dtype float16 --tp_size 1",
              "approximate",
              "the flags exist, but the script moved to examples/models/core/llama/ and now warns that the whole "
              "convert -> trtllm-build -> run workflow is legacy; converting with --dtype float16 and no quantization "
              "flag writes an FP16 checkpoint, so no later step can make the engine FP8",
              "python examples/quantization/quantize.py --model_dir … --qformat fp8 --kv_cache_dtype fp8 "
              "--output_dir … (or convert_checkpoint.py --use_fp8 --fp8_kv_cache)",
              "trtllm-convert trtllm-quantize trtllm-legacy"),
    FlagCheck("trtllm-build-use-fp8", "7", "trtllm-build … --use_fp8 --use_fp8_kv_cache", "wrong",
              "trtllm-build has neither flag (its arguments and plugin flags list no use_fp8, only "
              "use_fp8_context_fmha); FP8 weights and KV cache are chosen when the checkpoint is written. The flags "
              "look like the pre-0.8 per-model build.py (--enable_fp8 --fp8_kv_cache)",
              "quantize.py --qformat fp8 --kv_cache_dtype fp8, then trtllm-build --checkpoint_dir … --output_dir …",
              "trtllm-build trtllm-quantize"),
    FlagCheck("trtllm-build-limits", "7", "trtllm-build … --max_batch_size 16 --max_input_len 8192", "holds",
              "both flags exist in trtllm-build (with --max_seq_len and --max_num_tokens beside them)",
              "--max_batch_size B --max_input_len I --max_seq_len S", "trtllm-build"),
    FlagCheck("trtllm-serve-engine-dir", "7", "trtllm-serve --engine_dir /path/to/engine_fp8 --port 8080", "wrong",
              "trtllm-serve takes the model (hub name, checkpoint or engine directory) as a positional MODEL argument "
              "and has no --engine_dir; an engine needs --backend tensorrt (the default backend is pytorch) and "
              "--tokenizer, since an engine holds no tokenizer; --port exists (default 8000)",
              "trtllm-serve /path/to/engine_fp8 --backend tensorrt --tokenizer /path/to/model_hf --port 8080",
              "trtllm-serve"),
    FlagCheck("vllm-quantization-int8", "5", "vLLM (argument: --quantization int8)", "wrong",
              "vLLM has no 'int8' quantization method in any version read (early 2025: tpu_int8, experts_int8; "
              "recent: experts_int8, int8_per_channel_weight_only) and --quantization only accepts its choices; INT8 "
              "W8A8 SmoothQuant models are served from a compressed-tensors checkpoint, detected from its config.json",
              "vllm serve ./model-W8A8-INT8 (made with llm-compressor's SmoothQuant + GPTQ), no --quantization",
              "vllm-args vllm-quant"),
    FlagCheck("vllm-quantization-awq", "5", "vLLM (argument: --quantization awq)", "approximate",
              "'awq' exists, but naming it forces the old AWQ kernel even where the much faster Marlin kernel runs: "
              "vLLM logs 'Detected that the model can run with awq_marlin, however you specified quantization=awq "
              "explicitly, so forcing awq'",
              "no --quantization flag (auto-detected from the AWQ checkpoint) or --quantization awq_marlin",
              "vllm-quant vllm-awq-marlin"),
    FlagCheck("vllm-quantization-fp8-tree", "5", "TensorRT-LLM ou vLLM (argument: --quantization fp8)", "holds",
              "as in §7: dynamic FP8 from a 16-bit checkpoint", "--quantization fp8", "vllm-quant vllm-fp8"),
)


def guide_flag_check(flag_id: str) -> FlagCheck:
    for check in GUIDE_FLAG_CHECKS:
        if check.id == flag_id:
            return check
    raise LookupError(f"no flag check {flag_id!r}; known: {', '.join(c.id for c in GUIDE_FLAG_CHECKS)}")


def sources_of(check: FlagCheck) -> str:
    """The files and commits a check was made against, in words."""
    return "; ".join(FLAG_SOURCES[key] for key in check.source.split())
