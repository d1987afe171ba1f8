"""Bytes of an LLM at inference time, and the capacity planner that adds them up against a GPU.

The guide (§1) splits GPU memory into three pillars: weights, activations and the KV cache. This module computes
each from a model's architecture (`llmlab.models.ModelSpec`), adds the runtime's own overhead, and answers the
planning questions of §2: does it fit, how long a context, how many concurrent sequences?

Symbols (as in llmlab.models): L layers, d hidden_size, H query heads, K KV heads, hd head_dim, f intermediate_size,
V vocab_size, W sliding window, S layers using it, b bytes per element, g the int4 group size.

    weights     sum over matrices of out x in x bits/8, plus scales (and zero points) per format (FORMATS),
                plus the parts kept in 16-bit: embedding, lm_head (by default), norms, biases, routers
    KV cache    per token 2 x L x K x hd x b (K and V of every layer);
                for a sequence of n tokens: 2 x K x hd x b x ((L - S) x n + S x min(n, W))
    guide       batch x n x L x 2 x d x b / (H / K)   -- assumes H x hd = d (false for gemma-2, qwen3 ...)
                and no sliding window: `kv_bytes_guide` keeps it so the notebooks can show where it breaks
    activations the largest live tensors of one layer during a prefill (see `activation_bytes`)
    overhead    CUDA context + cuBLAS workspace + allocator slack (+ NCCL under tensor parallelism): `Runtime`

MLA (DeepSeek-V2/V3) caches one compressed latent per token and layer, (kv_lora_rank + qk_rope_head_dim) values,
as vLLM and SGLang store it (arXiv 2405.04434, eq. 9-10); transformers' eager cache keeps the decompressed K and V
instead, about 50x more. Only the latent formula is modelled here, and only for the KV cache.

Units: every function returns bytes (int). Reports print GiB (2**30) and GB (10**9): the guide's "Go" are GB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from llmlab.hardware import GPU, gpu as catalog_gpu, supports
from llmlab.models import ModelSpec, load_spec

GiB = 2**30
MiB = 2**20
GB = 10**9

# --------------------------------------------------------------------------------------------------------------
# Formats, as data
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """How one precision stores a weight matrix [out, in]."""

    name: str  # the planner's name for it: fp16, fp8, int4, ...
    bits: int  # bits per stored weight
    matmul: str  # the format the GPU's matmul runs in (what `hardware.supports` is asked): int4/nf4 -> fp16
    scales: str  # "none", "channel" (one per output row), "group" (per g input columns of a row), "block" (flat)
    scale_bits: int  # bits per scale (16-bit scales as in AWQ/GPTQ/compressed-tensors checkpoints; NF4 absmax fp32)
    zero_bits: int  # bits per zero point; 0 when symmetric (no zero stored)
    layout: str  # the checkpoint layout these numbers follow


FORMATS: dict[str, Format] = {
    "fp32": Format("fp32", 32, "fp32", "none", 0, 0, "plain float32"),
    "fp16": Format("fp16", 16, "fp16", "none", 0, 0, "plain float16"),
    "bf16": Format("bf16", 16, "bf16", "none", 0, 0, "plain bfloat16"),
    "fp8": Format("fp8", 8, "fp8", "channel", 16, 0,
                  "e4m3 weights, one 16-bit scale per output channel (compressed-tensors FP8 W8A8, vLLM)"),
    "int8": Format("int8", 8, "int8", "channel", 16, 0,
                   "symmetric int8 weights, one 16-bit scale per output channel (SmoothQuant / W8A8 INT8)"),
    "int4": Format("int4", 4, "fp16", "group", 16, 4,
                   "AWQ/GPTQ: per group of g input columns a 16-bit scale and a 4-bit zero point packed eight to an "
                   "int32 (GPTQ stores qzeros even when symmetric); weights dequantized to fp16 in the kernel (W4A16)"),
    "nf4": Format("nf4", 4, "fp16", "block", 32, 0,
                  "bitsandbytes NF4: blocks of 64 consecutive weights of the flattened matrix, one fp32 absmax each "
                  "(double quantization: 8-bit absmax + one fp32 per 256 blocks); dequantized to 16-bit to multiply"),
}
BYTES_PER_PARAM: dict[str, float] = {name: fmt.bits / 8 for name, fmt in FORMATS.items()}
KV_DTYPES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}  # bytes per cached element
NF4_BLOCK = 64  # bitsandbytes' default blocksize for 4-bit
NF4_NESTED_BLOCK = 256  # double quantization: absmax values per fp32 second-level scale
KEEPABLE = ("embedding", "lm_head")  # parts `keep_16bit` may name
GROUP_CANDIDATES = (32, 64, 96, 128, 192, 256)  # group sizes 4-bit kernels accept (multiples of 32)
W8A8 = ("fp8", "int8")  # matmul formats that quantize the activations too (per token, at every call)

# Tensor parallelism (Megatron-LM layout, as vLLM shards it): row-parallel matrices split their input columns,
# every other decoder matrix its output rows; K/V projections are replicated when there are fewer KV heads than GPUs.
ROW_PARALLEL = ("o_proj", "down_proj", "out_proj", "dense", "fc2", "c_proj", "w2", "wo", "dense_4h_to_h")
KV_PROJECTIONS = ("k_proj", "v_proj")
FUSED_QKV = ("qkv_proj",)

# --------------------------------------------------------------------------------------------------------------
# Runtime overhead: every constant in one place, each with the stored measurement it comes from
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Memory a GPU process holds besides weights, KV cache and activations, and how a prefill is cut.

    What `nvidia-smi` shows for one GPU at the peak of a prefill is PyTorch's *reserved* memory plus what lives outside
    PyTorch's allocator. The first holds the weights, KV cache, activations, cuBLAS's workspace and the caching
    allocator's slack; the second the CUDA context with its loaded kernels and, under tensor parallelism, NCCL.
    Stored runs: data/results/gpu-memory-anatomy.json (H100, TP=1) and gpu-tensor-parallel-h200.json (2x H200, TP=2).
    """

    cuda_context_bytes: int = 695 * MiB  # per GPU, outside PyTorch's allocator: the CUDA context (619 MiB right after
    # torch initializes CUDA) plus the kernels loaded on first use (cuBLAS GEMMs, SDPA, elementwise: +76 MiB).
    # Measured on the lent H100, torch 2.11 / CUDA 13, 2026-11-25 (gpu-memory-anatomy: 619 MiB before any model,
    # 695 MiB after the bf16 prefills); 701 and 721 MiB on the two H200 ranks once NCCL's share is taken out
    # (gpu-tensor-parallel-h200, 2026-11-26)
    fp8_kernels_bytes: int = 0  # per GPU, outside PyTorch's allocator, added by FP8 GEMMs (cuBLASLt's kernels):
    # none measured — 8B FP8 prefills saw 695 MiB outside PyTorch as bf16 did (lent H100, torch 2.11, 2026-11-26)
    workspace_bytes: int = 32 * MiB  # per GPU, inside PyTorch's allocator: cuBLAS's workspace, which torch sizes
    # by CUBLAS_WORKSPACE_CONFIG (default ":4096:8" = 32 MiB on compute capability 9.x, ":4096:2:16:8" = 8 MiB
    # before). Measured 32.0-34.0 MiB allocated beyond the weights before each prefill (H100, TP=1) and on each H200
    # rank (TP=2), 2026-11
    allocator_fraction: float = 0.23  # reserved minus allocated at a forward pass's peak, per byte of activations,
    # when no KV cache grows during the pass (vLLM allocates its pool first): 0.26, 0.22, 0.22 on three llama-3.1-8b
    # bf16 prefills without a cache (lent H100, gpu-memory-anatomy no_cache_points, 2026-11-26). A cache that grows
    # during the prefill (transformers) leaves about twice as much: GROWING_CACHE_SLACK
    nccl_bytes: int = 840 * MiB  # per GPU when tp > 1, outside PyTorch's allocator: what NCCL's communicator adds on
    # its first collective. Per channel and peer it keeps one FIFO per protocol (Simple: NCCL_BUFFSIZE, 4 MiB; LL128:
    # 4.7 MiB; LL: 0.5 MiB), allocated through cuMem in 2 MiB granules (about 12 MiB per channel and peer), plus
    # NCCL's own kernels and device structures; it grows with the channels NCCL opens (many on NVLink, a few over
    # PCIe, so PCIe pairs likely hold less), not with the messages. Measured 840 MiB on each rank of 2x H200 over
    # NVLink (torch 2.11's NCCL, NVLS off), 2026-11-26; benchmarks/gpu_tensor_parallel.py now stores NCCL's own log
    # of its channels and buffers to split it
    activation_quantization_bytes: int = 1  # bytes per value of a W8A8 linear's input (fp8, int8 weights) allocated
    # beside the 16-bit input to quantize it per token: 1 in vLLM, whose fused kernel writes the 8-bit copy;
    # 12 for llmlab.quant.kernels.FP8Linear, which goes through three fp32 temporaries (X.float(), X / s, the clamp)
    prefill_chunk: int | None = 8192  # tokens per forward pass: vLLM's max_num_batched_tokens for `vllm serve` on
    # >= 70 GiB GPUs (2048 on smaller ones); None = the whole batch x context at once, as transformers' generate does


GROWING_CACHE_SLACK = 0.48  # allocator_fraction measured when K and V grow during the prefill (transformers'
# DynamicCache): each layer's K and V are carved out of blocks the previous layer's activations freed, so the next
# layer's large tensors no longer fit the holes and new segments are reserved. Mean of the four llama-3.1-8b bf16
# prefills with >= 1 GiB of activations on the H100 (0.46-0.50, gpu-memory-anatomy, 2026-11-25); the same prefills at
# TP=2 on 2x H200 measured 0.29-0.61 per rank (2026-11-26). PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# removes most of it.
RUNTIME = Runtime()

# --------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightBytes:
    """The bytes of a model's weights in one precision, part by part."""

    precision: str  # format of the decoder linears (the model's own dtype for fp32/fp16/bf16)
    group_size: int | None  # int4: input columns per scale (None: one group per row); None for other formats
    quantized_params: int  # weights stored in `precision`: decoder linears (+ embedding/lm_head when not kept)
    quantized_bytes: int  # their payload, bits/8 each
    scale_bytes: int  # their metadata: scales, zero points, absmax
    kept_params: int  # parameters kept in 16-bit (fp32 for an fp32 model): norms, biases, routers, kept embeddings
    kept_bytes: int  # their bytes
    parts: dict = field(default_factory=dict)  # bytes by part: each linear name, "embedding", "lm_head", "other"

    @property
    def total(self) -> int:
        return self.quantized_bytes + self.scale_bytes + self.kept_bytes

    @property
    def bits_per_param(self) -> float:
        """Effective bits per parameter, everything included."""
        return 8 * self.total / (self.quantized_params + self.kept_params)

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "bits_per_param": round(self.bits_per_param, 4)}


def weight_bytes(spec: ModelSpec, precision: str = "fp16", group_size: int | None = 128,
                 keep_16bit: tuple[str, ...] = KEEPABLE, double_quant: bool = False) -> WeightBytes:
    """Bytes of `spec`'s weights with the decoder linears in `precision`.

    keep_16bit names the parts left in 16-bit ("embedding", "lm_head"; AWQ, GPTQ, FP8 and bitsandbytes keep both);
    norms, biases and routers always stay 16-bit. A 16/32-bit precision stores everything in that dtype.
    group_size matters for int4 only and must divide the input width of every quantized matrix.
    """
    fmt = _format(precision)
    unknown = sorted(set(keep_16bit) - set(KEEPABLE))
    if unknown:
        raise ValueError(f"keep_16bit may name {' and '.join(KEEPABLE)}, not {', '.join(unknown)}")
    if fmt.scales == "none":  # an unquantized model: every parameter in this dtype
        b = fmt.bits // 8
        parts = {linear.name: linear.weight_params * b for linear in spec.quantizable_linears}
        parts.update(embedding=spec.embedding_params * b, lm_head=spec.lm_head_params * b,
                     other=(spec.kept_params - spec.embedding_params - spec.lm_head_params) * b)
        return WeightBytes(precision, None, spec.quantizable_params, spec.quantizable_params * b, 0,
                           spec.kept_params, spec.kept_params * b, parts)

    # the matrices stored in `precision`: (part name, out, in, count)
    matrices = [(linear.name, linear.out_features, linear.in_features, linear.count)
                for linear in spec.quantizable_linears]
    if "embedding" not in keep_16bit:
        matrices.append(("embedding", spec.vocab_size, spec.hidden_size, 1))  # [V, d]
    if "lm_head" not in keep_16bit and spec.lm_head_params:
        matrices.append(("lm_head", spec.vocab_size, spec.hidden_size, 1))  # [V, d]
    group = _checked_group(fmt, group_size, sorted({columns for _, _, columns, _ in matrices}))

    parts: dict[str, int] = {"embedding": spec.embedding_params * 2, "lm_head": spec.lm_head_params * 2}
    quantized_params = quantized_bytes = scale_bytes = 0
    for name, rows, columns, count in matrices:
        payload = rows * columns * count * fmt.bits // 8
        metadata = _metadata_bytes(fmt, rows, columns, group, double_quant) * count
        parts[name] = payload + metadata
        quantized_params += rows * columns * count
        quantized_bytes += payload
        scale_bytes += metadata
    kept_params = spec.params - quantized_params
    parts["other"] = (spec.kept_params - spec.embedding_params - spec.lm_head_params) * 2
    return WeightBytes(precision, group if fmt.scales == "group" else None, quantized_params, quantized_bytes,
                       scale_bytes, kept_params, kept_params * 2, parts)


def _metadata_bytes(fmt: Format, rows: int, columns: int, group: int | None, double_quant: bool) -> int:
    """Scales and zero points of ONE matrix [rows, columns]."""
    if fmt.scales == "channel":
        return rows * fmt.scale_bits // 8
    if fmt.scales == "group":
        groups = rows * (columns // group if group else 1)  # [out, in] -> [out, in / g] scales and zeros
        return groups * (fmt.scale_bits + fmt.zero_bits) // 8
    blocks = math.ceil(rows * columns / NF4_BLOCK)  # [out, in] flattened -> [n / 64] absmax
    if double_quant:
        return blocks + math.ceil(blocks / NF4_NESTED_BLOCK) * 4  # 8-bit absmax + fp32 per 256 blocks
    return blocks * fmt.scale_bits // 8


def _checked_group(fmt: Format, group_size: int | None, widths: list[int]) -> int | None:
    """The int4 group size, after checking it divides every quantized matrix's input width (None: one group per row)."""
    if fmt.scales != "group" or group_size is None:
        return None
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive integer (or None for one group per row), not {group_size!r}")
    for width in widths:
        if width % group_size:
            suggestion = _group_suggestion(widths, group_size)
            raise ValueError(f"{fmt.name} needs group_size dividing {width}; try {suggestion}")
    return group_size


def _group_suggestion(widths: list[int], wanted: int) -> str:
    """The two group sizes nearest `wanted` that divide every width: "64 or 96"."""
    common = math.gcd(*widths)
    candidates = ([g for g in GROUP_CANDIDATES if common % g == 0]
                  or [g for g in range(1, common + 1) if common % g == 0])
    nearest = sorted(sorted(candidates, key=lambda g: (abs(g - wanted), g))[:2])
    return " or ".join(str(g) for g in nearest)


def _format(precision: str) -> Format:
    if precision not in FORMATS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[precision]


# --------------------------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------------------------


def kv_values_per_layer(spec: ModelSpec) -> int:
    """Values one token leaves in one layer's cache: 2 x K x hd (K and V), or the MLA latent width."""
    latent = spec.config.get("kv_lora_rank")
    if latent:  # MLA: the compressed latent c_KV and the shared RoPE key, as vLLM stores them
        return latent + spec.config.get("qk_rope_head_dim", 0)
    return 2 * spec.num_kv_heads * spec.head_dim


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str = "fp16") -> int:
    """Cache bytes per token of one sequence when every layer holds it: 2 x L x K x hd x b."""
    return spec.num_layers * kv_values_per_layer(spec) * _kv_bytes(kv_dtype)


def kv_cache_bytes(spec: ModelSpec, context: int, batch: int = 1, kv_dtype: str = "fp16") -> int:
    """KV cache of `batch` sequences of `context` tokens; sliding-window layers keep at most W tokens."""
    _check_positive(context=context, batch=batch)
    window_layers = spec.num_sliding_layers if spec.sliding_window else 0
    cached = (spec.num_layers - window_layers) * context + window_layers * min(context, spec.sliding_window or 0)
    return batch * cached * kv_values_per_layer(spec) * _kv_bytes(kv_dtype)


def kv_bytes_guide(spec: ModelSpec, context: int, batch: int = 1, kv_dtype: str = "fp16") -> int:
    """The guide's §1 formula: batch x seq x L x (2 x d) x b / gqa_factor, with gqa_factor = H / K.

    It assumes H x hd = d and no sliding window: exact for Llama, Mistral, Qwen2.5; wrong for gemma-2
    (H x hd = 4096, d = 3584; half the layers windowed), qwen3 (hd = 128 at any d), MLA models.
    """
    _check_positive(context=context, batch=batch)
    b = _kv_bytes(kv_dtype)
    return batch * context * spec.num_layers * 2 * spec.hidden_size * b * spec.num_kv_heads // spec.num_attention_heads


def _kv_bytes(kv_dtype: str) -> int:
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"unknown KV dtype {kv_dtype!r}; choose one of {', '.join(KV_DTYPES)}")
    return KV_DTYPES[kv_dtype]


# --------------------------------------------------------------------------------------------------------------
# Activations and overhead
# --------------------------------------------------------------------------------------------------------------


def activation_bytes(spec: ModelSpec, batch: int = 1, context: int = 4096, dtype: str = "fp16", tp: int = 1,
                     flash: bool = True, logits: str = "last", quantization_bytes: int = 0) -> int:
    """Peak activation bytes of one prefill forward pass over batch x context tokens (T), on one GPU of tp.

    The assumption: layers run one after another and the allocator frees each intermediate at its last use (eager
    PyTorch does), so the peak is what every layer holds plus the largest phase of one layer, or the logits:
      held       2 x T x d: the embedding output (kept by the model's forward) and the layer's input (kept by its loop)
      attention  the normed input T x d; q and the attention output T x H x hd, k and v T x K x hd each; with
                 flash=False (eager attention) the scores [batch, H, context, context] three times over: in the dtype,
                 the fp32 copy softmax(dtype=float32) makes of them, and its fp32 output (b + 8 bytes per score)
      MLP        the post-attention residual and its normed copy 2 x T x d, gate and up outputs and their product
                 3 x T x f; MoE as vLLM's fused kernel: each token's k experts at once, 3 x T x k x f_e
      logits     after the layers: the final hidden states T x d and the logits [batch, V] for the last position
                 (generate upcasts them to fp32: b + 4 bytes each) or [T, V] in the dtype with logits="all"
                 (a loss would upcast them to fp32 again: not counted)
      quantize   W8A8 linears (fp8, int8) quantize their input per token first: `quantization_bytes` per input value
                 beside it (`Runtime.activation_quantization_bytes`). The largest input is down_proj's, the gate x up
                 product T x f: the residual and its normed copy 2 x T x d, the product, and its staging T x f x q.
                 With vLLM's fused kernel (q = 1) the MLP phase stays larger; llmlab's eager FP8Linear (q = 12) makes
                 this the peak
    Calibrated on the lent H100 (transformers 5.17, bf16, Llama-3.1-8B shapes, 2 layers): measured/predicted peak
    1.004 at 4096 and 8192 tokens (SDPA), 1.01 with eager attention at 4096, 1.002 for all-position logits at 2048;
    1.28 at 1024 tokens, where a fixed ~32 MiB (cuBLAS's workspace, taken from PyTorch's allocator) shows.
    Under tensor parallelism heads and MLP widths split over tp; the residual stream and logits do not.
    """
    _check_positive(batch=batch, context=context, tp=tp)
    if isinstance(quantization_bytes, bool) or not isinstance(quantization_bytes, int) or quantization_bytes < 0:
        raise ValueError(f"quantization_bytes must be a whole number of bytes >= 0, not {quantization_bytes!r}")
    if logits not in ("last", "all"):
        raise ValueError(f"logits must be 'last' (generation) or 'all' (perplexity), not {logits!r}")
    b = _activation_dtype_bytes(dtype)
    tokens = batch * context
    d, hd = spec.hidden_size, spec.head_dim
    heads, kv_heads = math.ceil(spec.num_attention_heads / tp), max(1, spec.num_kv_heads // tp)
    held = 2 * tokens * d * b
    attention = tokens * (d + (2 * heads + 2 * kv_heads) * hd) * b
    if not flash:
        attention += batch * heads * context * context * (b + 8)  # [batch, H, n, n] scores, fp32 copy, fp32 softmax
    widths = []  # (experts per token, MLP width per GPU) of each kind of MLP layer
    if spec.num_moe_layers < spec.num_layers and spec.intermediate_size:
        widths.append((1, math.ceil(spec.intermediate_size / tp)))
    if spec.num_experts and spec.expert_intermediate_size:
        widths.append((spec.num_experts_per_token, math.ceil(spec.expert_intermediate_size / tp)))
    mlp = max((tokens * (2 * d + 3 * k * width) * b for k, width in widths), default=0)
    quantize = max((tokens * (2 * d * b + k * width * (b + quantization_bytes)) for k, width in widths), default=0)
    if logits == "last":
        logit_bytes = tokens * d * b + batch * spec.vocab_size * (b + 4)
    else:
        logit_bytes = tokens * d * b + tokens * spec.vocab_size * b
    return max(held + attention, held + mlp, held + quantize, logit_bytes)


def overhead_bytes(activation: int = 0, tp: int = 1, runtime: Runtime = RUNTIME, precision: str = "fp16") -> int:
    """Per-GPU runtime overhead: CUDA context (+ cuBLASLt's FP8 kernels when the weights multiply in FP8), cuBLAS's
    workspace, the caching allocator's slack on the activations, and NCCL's communicator when tp > 1.

    An all-reduce needs no buffer of its own here: it sums the row-parallel output in place (that tensor is an
    activation) and stages through NCCL's FIFOs (in nccl_bytes). The constants are `Runtime`'s.
    """
    _check_positive(tp=tp)
    kernels = runtime.fp8_kernels_bytes if _format(precision).matmul == "fp8" else 0
    slack = int(runtime.allocator_fraction * activation)
    communication = runtime.nccl_bytes if tp > 1 else 0
    return runtime.cuda_context_bytes + kernels + runtime.workspace_bytes + slack + communication


def _activation_dtype_bytes(dtype: str) -> int:
    """Activations run in the compute dtype: 4 bytes for fp32, else 2 (fp8/int8/int4 models compute in 16-bit)."""
    if dtype not in FORMATS:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(FORMATS)}")
    return 4 if dtype == "fp32" else 2


# --------------------------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What one model needs at one precision, context and batch, and how it sits on a GPU. Bytes unless named."""

    model: str  # the spec's name
    params: int  # exact parameter count
    active_params: int  # parameters touched per token (MoE: k of E experts)
    precision: str  # weights: fp32, fp16, bf16, fp8, int8, int4, nf4
    kv_dtype: str  # KV cache elements: fp32, fp16, bf16, fp8
    context: int  # tokens per sequence
    batch: int  # concurrent sequences
    tp: int  # tensor-parallel GPUs
    group_size: int | None  # int4 group size (None for other formats)
    weight_bytes: int  # all weights, whole model
    weight_breakdown: dict  # quantized_bytes, scale_bytes, kept_bytes (whole model)
    kv_bytes_per_token: int  # one token of one sequence, all layers (no window cap)
    kv_bytes: int  # the cache of batch x context tokens (window cap applied), whole model
    prefill_tokens: int  # tokens in the largest forward pass: min(batch x context, prefill_chunk)
    activation_bytes: int  # peak activations of that pass, per GPU
    per_gpu_weight_bytes: int  # the weight shard one GPU holds (= weight_bytes when tp = 1)
    per_gpu_kv_bytes: int  # the KV-cache shard one GPU holds (kv heads split over tp, replicated when tp > kv heads)
    overhead_bytes: int  # CUDA context (+ FP8 kernels), cuBLAS workspace, allocator slack, NCCL (per GPU)
    per_gpu_bytes: int  # what one GPU holds: its weight and KV shards + activations + overhead
    total_bytes: int  # all GPUs together (per_gpu_bytes x tp)
    gpu: str | None = None  # catalog name of the GPU planned on
    gpu_memory_bytes: int | None = None  # that GPU's total memory as torch reports it (measured or estimated)
    gpu_memory_measured: bool | None = None  # False when gpu_memory_bytes is an estimate from the datasheet
    gpu_memory_utilization: float | None = None  # share of it the engine may use (vLLM's default 0.9)
    budget_bytes: int | None = None  # gpu_memory_bytes x gpu_memory_utilization, per GPU
    headroom_bytes: int | None = None  # budget - per_gpu_bytes (negative: does not fit)
    fits: bool | None = None  # per_gpu_bytes <= budget_bytes
    max_context: int | None = None  # longest context that fits at this batch (capped at max_position_embeddings)
    max_context_limited_by: str | None = None  # "memory" or "max_position_embeddings"
    max_concurrency: int | None = None  # most sequences that fit at this context
    warnings: list = field(default_factory=list)  # things to know: no native kernels, context past the model's limit

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Setup:
    """Everything one plan holds fixed while context and batch vary."""

    spec: ModelSpec
    weights: WeightBytes
    kv_dtype: str
    activation_dtype: str
    tp: int
    runtime: Runtime


def plan(model: str | dict | ModelSpec, precision: str = "fp16", kv_dtype: str = "fp16", context: int = 4096,
         batch: int = 1, gpu: str | GPU | None = None, tp: int = 1, gpu_memory_utilization: float = 0.9,
         group_size: int | None = 128, runtime: Runtime = RUNTIME) -> Plan:
    """Plan `model` (catalog name, config path, dict, hub id or ModelSpec) at this precision, context and batch."""
    _check_positive(context=context, batch=batch, tp=tp)
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization is a fraction in (0, 1], not {gpu_memory_utilization}")
    _format(precision)
    _kv_bytes(kv_dtype)
    device = catalog_gpu(gpu) if gpu is not None else None  # refuse an unknown GPU before reading the model
    spec = model if isinstance(model, ModelSpec) else load_spec(model)
    weights = weight_bytes(spec, precision, group_size)
    _check_tensor_parallel(spec, tp, weights.group_size)
    setup = _Setup(spec, weights, kv_dtype, "fp32" if precision == "fp32" else "fp16", tp, runtime)
    shares = _per_gpu(setup, context, batch)
    result = Plan(
        model=spec.name, params=spec.params, active_params=spec.active_params, precision=precision,
        kv_dtype=kv_dtype, context=context, batch=batch, tp=tp, group_size=weights.group_size,
        weight_bytes=weights.total,
        weight_breakdown={"quantized_bytes": weights.quantized_bytes, "scale_bytes": weights.scale_bytes,
                          "kept_bytes": weights.kept_bytes},
        kv_bytes_per_token=kv_bytes_per_token(spec, kv_dtype), kv_bytes=kv_cache_bytes(spec, context, batch, kv_dtype),
        prefill_tokens=_prefill_tokens(setup, context, batch), activation_bytes=shares["activation"],
        per_gpu_weight_bytes=shares["weights"], per_gpu_kv_bytes=shares["kv"],
        overhead_bytes=shares["overhead"], per_gpu_bytes=shares["total"], total_bytes=shares["total"] * tp)
    if spec.max_position_embeddings and context > spec.max_position_embeddings:
        result.warnings.append(f"context {context} exceeds {spec.name}'s max_position_embeddings "
                               f"{spec.max_position_embeddings}")
    if device is not None:
        _place(result, setup, device, gpu_memory_utilization)
    return result


def _place(result: Plan, setup: _Setup, device: GPU, utilization: float) -> None:
    """Fill the GPU fields of `result`: budget, fit, max context and concurrency, warnings."""
    budget = int(device.usable_memory_bytes * utilization)
    result.gpu, result.gpu_memory_bytes = device.name, device.usable_memory_bytes
    result.gpu_memory_measured, result.gpu_memory_utilization = device.memory_measured, utilization
    result.budget_bytes, result.headroom_bytes = budget, budget - result.per_gpu_bytes
    result.fits = result.per_gpu_bytes <= budget
    fits = lambda context, batch: _per_gpu(setup, context, batch)["total"] <= budget  # noqa: E731
    limit = setup.spec.max_position_embeddings or 2**24
    result.max_context = _largest(lambda context: fits(context, result.batch), limit)
    result.max_context_limited_by = "max_position_embeddings" if result.max_context == limit else "memory"
    result.max_concurrency = _largest(lambda batch: fits(result.context, batch), 2**20)
    result.warnings.extend(_kernel_warnings(device, result.precision, result.kv_dtype))
    if not device.memory_measured:
        result.warnings.append(f"{device.name}'s usable memory is estimated "
                               f"({device.usable_memory_bytes / GiB:.1f} GiB of {device.memory_gb:g} GiB), not measured")
    if not result.fits:
        result.warnings.append(
            f"does not fit: {result.per_gpu_bytes / GiB:.1f} GiB per GPU > budget {budget / GiB:.1f} GiB "
            f"({utilization:g} x {device.usable_memory_bytes / GiB:.1f} GiB); try a smaller precision, context or "
            "batch, a larger GPU, or more tensor-parallel GPUs")


def _kernel_warnings(device: GPU, precision: str, kv_dtype: str) -> list[str]:
    """Formats this GPU stores but cannot multiply natively."""
    warnings = []
    compute = FORMATS[precision].matmul
    here = f"{device.name} (compute capability {device.capability_text})"
    if not supports(device, compute):
        if compute == "fp8":
            fallback = ("engines fall back to weight-only FP8 (vLLM's Marlin, W8A16): memory as planned, "
                        "no FP8 speed-up"
                        if device.compute_capability >= (8, 0) else
                        "vLLM's weight-only FP8 fallback needs >= 8.0 too: use int8 (W8A8) or int4 on this GPU")
            warnings.append(f"fp8 on {here} has no native kernels (FP8 tensor cores need >= 8.9, Ada/Hopper); "
                            f"{fallback}")
        elif compute == "bf16":
            warnings.append(f"bf16 on {here} has no native kernels (bf16 tensor cores need >= 8.0); use fp16")
        else:
            warnings.append(f"{precision} on {here} has no native {compute} matmul kernels")
    if kv_dtype == "fp8" and not supports(device, "fp8"):
        warnings.append(f"fp8 KV cache on {here}: stored in fp8 but converted in software (no FP8 attention below 8.9)")
    if kv_dtype == "bf16" and not supports(device, "bf16"):
        warnings.append(f"bf16 KV cache on {here}: no bf16 tensor cores; use an fp16 KV cache")
    return warnings


def _prefill_tokens(setup: _Setup, context: int, batch: int) -> int:
    chunk = setup.runtime.prefill_chunk
    return batch * context if chunk is None else min(batch * context, chunk)


def _per_gpu(setup: _Setup, context: int, batch: int) -> dict[str, int]:
    """Bytes one GPU of tp holds at this context and batch: weights, kv, activation, overhead, total."""
    spec, tp = setup.spec, setup.tp
    weights = int(sum(size * weight_share(spec, part, tp) for part, size in setup.weights.parts.items()))
    kv = int(kv_cache_bytes(spec, context, batch, setup.kv_dtype) * kv_share(spec, tp))
    tokens = _prefill_tokens(setup, context, batch)
    # a chunk smaller than the batch's prompts covers one sequence's slice: tokens x 1; else the whole batch
    rows, length = (batch, context) if tokens == batch * context else (1, tokens)
    w8a8 = FORMATS[setup.weights.precision].matmul in W8A8
    plain = activation_bytes(spec, rows, length, setup.activation_dtype, tp)  # 16-bit activations alone
    activation = activation_bytes(spec, rows, length, setup.activation_dtype, tp,
                                  quantization_bytes=setup.runtime.activation_quantization_bytes) if w8a8 else plain
    # the allocator's slack follows the 16-bit activations: 8B FP8 prefills (H100, 2026-11-26) left 1.4 GiB reserved
    # and free beside 7.7 GiB of activations where bf16 left 1.9 GiB beside 3.9 GiB (the staging buffers reuse holes)
    overhead = overhead_bytes(plain, tp, setup.runtime, setup.weights.precision)
    return {"weights": weights, "kv": kv, "activation": activation, "overhead": overhead,
            "total": weights + kv + activation + overhead}


def weight_share(spec: ModelSpec, part: str, tp: int) -> float:
    """Fraction of one weight part a GPU holds under tp (Megatron layout; vocab-parallel embedding and lm_head)."""
    if tp == 1:
        return 1.0
    if part == "other":  # norms, biases, routers: replicated (biases of split matrices are split too; < 0.01 %)
        return 1.0
    leaf = part.rsplit(".", 1)[-1]
    kv_per_gpu = max(1, spec.num_kv_heads // tp)
    if leaf in KV_PROJECTIONS:
        return kv_per_gpu / spec.num_kv_heads
    if leaf in FUSED_QKV:
        heads, kv_heads = spec.num_attention_heads, spec.num_kv_heads
        return (heads / tp + 2 * kv_per_gpu) / (heads + 2 * kv_heads)
    return 1 / tp


def kv_share(spec: ModelSpec, tp: int) -> float:
    """Fraction of the KV cache one GPU holds: K/tp heads each, or one replicated head when K < tp; MLA latents are
    replicated on every GPU."""
    if spec.config.get("kv_lora_rank"):
        return 1.0
    return max(1, spec.num_kv_heads // tp) / spec.num_kv_heads


def _check_tensor_parallel(spec: ModelSpec, tp: int, group: int | None) -> None:
    """vLLM's rules: tp divides the query heads; tp divides the KV heads, or (fewer KV heads than GPUs) the KV heads
    divide tp and each GPU holds a replica; every split matrix dimension divides by tp (and by the int4 group)."""
    if tp == 1:
        return
    heads, kv_heads = spec.num_attention_heads, spec.num_kv_heads
    if heads % tp:
        raise ValueError(f"tp={tp} must divide the {heads} attention heads of {spec.name}; try tp in "
                         f"{_divisors(heads)}")
    if kv_heads >= tp and kv_heads % tp:
        raise ValueError(f"tp={tp} must divide the {kv_heads} KV heads of {spec.name}; try tp in {_divisors(kv_heads)}")
    if kv_heads < tp and tp % kv_heads:
        raise ValueError(f"tp={tp} exceeds the {kv_heads} KV heads of {spec.name} but is not a multiple of them, so "
                         f"they cannot be replicated evenly; try tp in {_divisors(kv_heads)} "
                         f"or a multiple of {kv_heads}")
    for linear in spec.quantizable_linears:
        leaf = linear.name.rsplit(".", 1)[-1]
        if leaf in KV_PROJECTIONS + FUSED_QKV:
            continue  # split by heads, checked above
        width = linear.in_features if leaf in ROW_PARALLEL else linear.out_features
        if width % tp:
            what = "input columns" if leaf in ROW_PARALLEL else "output rows"
            raise ValueError(f"tp={tp} must divide {linear.name}'s {width} {what}; try tp in {_divisors(width)}")
        if group and leaf in ROW_PARALLEL and (width // tp) % group:
            raise ValueError(f"under tp={tp} each GPU holds {width // tp} input columns of {linear.name}, "
                             f"not a multiple of group_size {group}; "
                             f"try group_size {_group_suggestion([width // tp], group)}")


def _divisors(n: int, up_to: int = 16) -> str:
    return ", ".join(str(d) for d in range(1, min(n, up_to) + 1) if n % d == 0)


def _largest(fits, limit: int) -> int:
    """The largest n in [1, limit] with fits(n) (fits is monotone: true, then false); 0 if fits(1) is false."""
    if not fits(1):
        return 0
    low, high = 1, 2
    while high < limit and fits(high):  # gallop to bracket the answer
        low, high = high, high * 2
    high = min(high, limit)
    if fits(high):
        return high
    while high - low > 1:  # fits(low) and not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


# --------------------------------------------------------------------------------------------------------------
# The guide's §2 table, as data, and its check
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuideRow:
    """One row of the guide's §2 table, as printed (its "Go" are GB, 10**9 bytes)."""

    size: str  # "8B" or "70B"
    model: str  # the catalog model standing for it (the guide names Llama 3 8B / 70B)
    label: str  # the precision column as printed
    precisions: tuple[str, ...]  # planner precisions it stands for ("FP8 / INT8" -> fp8, int8)
    weights_gb: float  # "VRAM Poids seuls", GB
    total_gb: tuple[float, float]  # "VRAM Totale requise (avec contexte)", GB, as a range (lo, hi)
    gpu_text: str  # "Matériel GPU minimum recommandé", as printed
    gpus: tuple[tuple[str, int], ...]  # (catalog GPU, count) for each option the text names ("Laptop" left out)
    gain_percent: int  # "Gain VRAM vs FP16": 0 for the reference, -50, -75


GUIDE_TABLE: tuple[GuideRow, ...] = (
    GuideRow("8B", "llama-3.1-8b", "FP16", ("fp16",), 16, (18, 20), "1x RTX 3090/4090 (24 Go) ou 1x A10G",
             (("RTX 3090", 1), ("RTX 4090", 1), ("A10G", 1)), 0),
    GuideRow("8B", "llama-3.1-8b", "FP8 / INT8", ("fp8", "int8"), 8, (10, 12), "1x RTX 4060 Ti (16 Go) ou T4",
             (("RTX 4060 Ti 16GB", 1), ("T4", 1)), -50),
    GuideRow("8B", "llama-3.1-8b", "INT4 (AWQ/GGUF)", ("int4",), 4, (6, 8), "1x RTX 3060 (12 Go) ou Laptop",
             (("RTX 3060 12GB", 1),), -75),
    GuideRow("70B", "llama-3.1-70b", "FP16", ("fp16",), 140, (160, 160), "2x H100 (80 Go) ou 2x A100 (80 Go)",
             (("H100 SXM", 2), ("A100 80GB", 2)), 0),
    GuideRow("70B", "llama-3.1-70b", "FP8 / INT8", ("fp8", "int8"), 70, (78, 78), "1x H100 (80 Go)",
             (("H100 SXM", 1),), -50),
    GuideRow("70B", "llama-3.1-70b", "INT4 (AWQ/GGUF)", ("int4",), 35, (42, 42), "1x A6000 (48 Go) ou 2x RTX 3090/4090",
             (("RTX A6000", 1), ("RTX 3090", 2), ("RTX 4090", 2)), -75),
)

VERDICTS = ("holds", "approximate", "wrong")  # in order of severity
WEIGHT_TOLERANCE = (0.10, 0.30)  # |planned / guide - 1| up to which weights "hold", then are "approximate"
TOTAL_TOLERANCE = (0.10, 0.30)  # distance from the guide's total range, relative to it
GAIN_TOLERANCE = (5, 15)  # percentage points between planned and printed gains
MIN_USEFUL_CONTEXT = 8192  # a recommended GPU that fits fewer tokens than this "fits only approximately"


@dataclass(frozen=True)
class GuideCheck:
    """One guide row beside the planner's numbers, with a verdict."""

    row: GuideRow  # the row as printed
    precision: str  # the planner precision used for the weights
    weights_gb: float  # planned weights, GB
    total_gb: float  # planned total on one device at the check's context and batch, GB
    gain_percent: float  # planned weight change vs the FP16 row, %
    options: tuple[dict, ...]  # per recommended GPU option: gpu, count, precision, fits, max_context, warnings
    components: dict  # "weights", "total", "gpu", "gain" -> (verdict, sentence)
    verdict: str  # the worst component verdict: holds, approximate or wrong
    reason: str  # the sentence behind it

    def to_dict(self) -> dict:
        return asdict(self)


def guide_table() -> tuple[GuideRow, ...]:
    """The guide's §2 table as data."""
    return GUIDE_TABLE


def check_guide_table(context: int = 4096, batch: int = 1, kv_dtype: str = "fp16",
                      gpu_memory_utilization: float = 0.9, group_size: int = 128) -> list[GuideCheck]:
    """Each row of the guide's §2 table beside the planner at this context and batch, with a verdict and a reason."""
    specs = {row.model: load_spec(row.model) for row in GUIDE_TABLE}
    fp16_weights = {name: weight_bytes(spec, "fp16").total for name, spec in specs.items()}
    checks = []
    for row in GUIDE_TABLE:
        spec, precision = specs[row.model], row.precisions[0]
        alone = plan(spec, precision, kv_dtype, context, batch, group_size=group_size)
        weights = weight_bytes(spec, precision, group_size)
        options = tuple(_guide_option(spec, row, name, count, kv_dtype, context, batch, gpu_memory_utilization,
                                      group_size) for name, count in row.gpus)
        gain = 100 * (weights.total / fp16_weights[row.model] - 1)
        components = {
            "weights": _weights_verdict(row, weights),
            "total": _total_verdict(row, alone.total_bytes / GB, context, batch),
            "gpu": _gpu_verdict(options, kv_dtype, gpu_memory_utilization, batch),
            "gain": _gain_verdict(row, gain),
        }
        worst = max(components.values(), key=lambda item: VERDICTS.index(item[0]))
        reasons = [sentence for verdict, sentence in components.values() if verdict == worst[0]]
        checks.append(GuideCheck(row, precision, round(weights.total / GB, 2), round(alone.total_bytes / GB, 2),
                                 round(gain, 1), options, components, worst[0], "; ".join(reasons)))
    return checks


def _guide_option(spec: ModelSpec, row: GuideRow, name: str, count: int, kv_dtype: str, context: int, batch: int,
                  utilization: float, group_size: int) -> dict:
    """Plan one recommended GPU option, in the first of the row's precisions the GPU runs natively."""
    device = catalog_gpu(name)
    native = [p for p in row.precisions if supports(device, FORMATS[p].matmul)]
    precision = (native or row.precisions)[0]
    result = plan(spec, precision, kv_dtype, context, batch, device, count, utilization, group_size)
    return {"gpu": device.name, "count": count, "precision": precision, "fits": result.fits,
            "max_context": result.max_context, "per_gpu_gb": round(result.per_gpu_bytes / GB, 2),
            "budget_gb": round(result.budget_bytes / GB, 2), "warnings": list(result.warnings)}


def _grade(error: float, tolerance: tuple[float, float]) -> str:
    return "holds" if error <= tolerance[0] else "approximate" if error <= tolerance[1] else "wrong"


def _weights_verdict(row: GuideRow, weights: WeightBytes) -> tuple[str, str]:
    planned = weights.total / GB
    ratio = planned / row.weights_gb - 1
    verdict = _grade(abs(ratio), WEIGHT_TOLERANCE)
    if verdict == "holds":
        return verdict, f"weights {planned:.1f} GB match the guide's ~{row.weights_gb:g} GB ({ratio:+.0%})"
    why = f"the embedding and lm_head stay 16-bit ({weights.kept_bytes / GB:.1f} GB)"
    if weights.scale_bytes > 0.01 * GB:
        why += f" and the scales and zero points add {weights.scale_bytes / GB:.2f} GB"
    return verdict, f"weights are {planned:.1f} GB, not ~{row.weights_gb:g} GB ({ratio:+.0%}): {why}"


def _total_verdict(row: GuideRow, planned: float, context: int, batch: int) -> tuple[str, str]:
    low, high = row.total_gb
    distance = max(low - planned, planned - high, 0) / low
    printed = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    return (_grade(distance, TOTAL_TOLERANCE),
            f"total at {context} tokens x {batch} is {planned:.1f} GB vs the guide's ~{printed} GB")


def _gpu_verdict(options: tuple[dict, ...], kv_dtype: str, utilization: float, batch: int) -> tuple[str, str]:
    failing = [option for option in options if not option["fits"]]
    if failing:
        option = failing[0]
        return "wrong", (f"does not fit on {option['count']}x {option['gpu']} in {option['precision']}: "
                         f"{option['per_gpu_gb']:.1f} GB per GPU > budget {option['budget_gb']:.1f} GB "
                         f"(utilization {utilization:g})")
    short = [option for option in options if option["max_context"] < MIN_USEFUL_CONTEXT]
    if short:
        option = short[0]
        return "approximate", (f"fits on {option['count']}x {option['gpu']} but leaves room for only "
                               f"{option['max_context']:,} tokens of {kv_dtype} KV at batch {batch} "
                               f"(utilization {utilization:g})")
    listed = ", ".join(f"{o['count']}x {o['gpu']} ({o['precision']}, up to {o['max_context']:,} tokens)"
                       for o in options)
    return "holds", f"fits on {listed}"


def _gain_verdict(row: GuideRow, gain: float) -> tuple[str, str]:
    if row.gain_percent == 0:
        return "holds", "reference row"
    verdict = _grade(abs(gain - row.gain_percent), GAIN_TOLERANCE)
    return verdict, f"saves {-gain:.0f} % of the FP16 weights vs the guide's {-row.gain_percent} %"
