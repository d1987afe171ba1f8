"""Real low-precision execution: the GEMMs a quantized model runs, not fake-quant.

Fake quantization (`llmlab.quant.w8a8`, `rtn`, `gptq`, `awq`) computes the right *numbers* in float32 on any device;
it says nothing about *speed*, because the matmul still reads 16- or 32-bit weights. Here the weights are stored in
their low-precision format and multiplied by the kernels serving engines use:

    kernel  weights                    activations             torch kernel                        native on
    bf16    bf16                       bf16                    torch.matmul (cuBLAS)               any CUDA GPU
    fp8     e4m3, scale per out row    e4m3, scale per token   torch._scaled_mm (row-wise scales)  sm_89+ (Ada, Hopper)
    int8    int8, scale per out row    int8, scale per token   torch._int_mm (int32 accumulate)    sm_75+ (Turing on)
    int4    int4, scale per group      bf16 (W4A16)            torch._weight_int4pack_mm           sm_80+ (Ampere on)
    w4a16   int4, scale per group      bf16/fp16 (W4A16)       our Triton kernel (triton_w4a16)    sm_80+ (Ampere on)

W8A8 (fp8, int8): Y = s_X s_Wᵀ ⊙ (Q_X Q_Wᵀ) — the scales sit outside the inner sum, so they are applied to the int32
(or fp32) accumulator after the GEMM (SmoothQuant, arXiv 2211.10438, §3). W4A16: the kernel unpacks 4-bit codes to
bf16 inside the GEMM, Ŵ = (q − 8) · s + z per group (torch's "tinygemm" convention, checked in tests); our symmetric
grids have z = 0. Decode (a few tokens at a time) is memory-bound, so fewer bytes per weight is what makes it fast.
w4a16 runs the same math from the compressed-tensors layout our exports write (`llmlab.quant.triton_w4a16`), as is.

Every kernel also runs on CPU (torch ships CPU versions), which checks the numbers anywhere; only GPU timings say
anything about speed. `benchmark_gemm` times one kernel at one shape (CUDA events, median, rotating weight copies so
the weights are read from HBM, not from the 50 MB L2 cache).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import torch

from llmlab.quant.formats import check_group_size, quantize, quantize_fp8
from llmlab.quant.packing import NIBBLES_PER_WORD, pack_int4

KERNELS = ("bf16", "fp8", "int8", "int4", "w4a16")
MIN_COMPUTE_CAPABILITY = {"bf16": (8, 0), "fp8": (8, 9), "int8": (7, 5), "int4": (8, 0), "w4a16": (8, 0)}  # native
INT_MM_MIN_ROWS = 17  # torch._int_mm on CUDA wants more than 16 rows: decode rows are padded up to this many
INT4_GROUP_SIZES = (32, 64, 128, 256)  # group sizes torch's int4 kernel accepts
INT4_INNER_K_TILES = (8, 4, 2)  # packing parameter of torch's int4 layout: the largest with in_features % (16·t) == 0


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is unknown; choose one of {', '.join(KERNELS)}")


def kernel_available(kernel: str, device) -> tuple[bool, str]:
    """Whether `kernel` runs natively on `device`, and a sentence saying why (or what would run where)."""
    _check_kernel(kernel)
    device = torch.device(device)
    if kernel == "w4a16" and importlib.util.find_spec("triton") is None:
        return False, ("w4a16 is a Triton kernel and triton is not installed: pip install triton (Linux; it comes "
                       "with CUDA builds of torch)")
    if device.type != "cuda":
        return True, (f"{kernel} runs on CPU through torch's reference kernel: numbers are exact, timings say nothing "
                      "about a GPU")
    major, minor = torch.cuda.get_device_capability(device)
    need = MIN_COMPUTE_CAPABILITY[kernel]
    name = torch.cuda.get_device_name(device)
    if (major, minor) < need:
        return False, (f"{kernel} GEMM needs compute capability >= {need[0]}.{need[1]}; {name} is {major}.{minor}"
                       + (" (FP8 tensor cores arrived with Ada and Hopper)" if kernel == "fp8" else ""))
    return True, f"{kernel} GEMM runs natively on {name} (compute capability {major}.{minor})"


# ---------------------------------------------------------------- linear layers that run the real kernels


class _RealLinear(torch.nn.Module):
    """What the real-kernel linears share: Y = kernel(prepare(X)) in the model's dtype, plus the bias. Subclasses
    define `prepare` (activations into the kernel's format) and `kernel` (the GEMM with its scales)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        X = x.reshape(-1, shape[-1])  # [..., in] -> [tokens, in]
        Y = self.kernel(*self.prepare(X)).to(self.out_dtype)  # [tokens, out]
        if self.bias is not None:
            Y = Y + self.bias
        return Y.reshape(*shape[:-1], -1)  # [tokens, out] -> [..., out]


class Int8Linear(_RealLinear):
    """W8A8 INT8: int8 weights (one scale per output row), activations quantized per token at every call."""

    def __init__(self, Q_W: torch.Tensor, s_W: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype):
        super().__init__()
        self.register_buffer("Q_W", Q_W.contiguous())  # [out, in] int8 row-major: Q_W.t() is the column-major B cuBLAS wants
        self.register_buffer("s_W", s_W.reshape(1, -1).float())  # [1, out]
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_dtype = out_dtype  # dtype of the output (the model's activations dtype)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: torch.nn.Linear) -> "Int8Linear":
        Q_W, s_W, _ = quantize(linear.weight.float(), 8, None, symmetric=True, axis=-1)  # per row: s [out, 1]
        return cls(Q_W.to(torch.int8), s_W, linear.bias, linear.weight.dtype)

    def prepare(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations X [tokens, in] -> (Q_X int8 [rows, in], s_X [tokens, 1]): per-token symmetric int8."""
        Q_X, s_X, _ = quantize(X.float(), 8, None, symmetric=True, axis=-1)  # per token: s_X [tokens, 1]
        if X.is_cuda and X.shape[0] < INT_MM_MIN_ROWS:  # pad decode rows: the CUDA kernel refuses M <= 16
            Q_X = torch.nn.functional.pad(Q_X, (0, 0, 0, INT_MM_MIN_ROWS - X.shape[0]))
        return Q_X.to(torch.int8), s_X

    def kernel(self, Q_X: torch.Tensor, s_X: torch.Tensor) -> torch.Tensor:
        """The INT8 GEMM Q_X [rows, in] · Q_Wᵀ -> int32 [rows, out], then the scales s_X s_Wᵀ, which sit outside the
        inner sum (CUTLASS kernels apply them in the GEMM's epilogue; here they are one extra elementwise pass)."""
        acc = torch._int_mm(Q_X, self.Q_W.t())[:s_X.shape[0]]  # [tokens, out] int32 (padding rows dropped)
        return acc.float() * s_X * self.s_W

    def weight_bytes(self) -> int:
        return self.Q_W.numel() + self.s_W.numel() * 2  # int8 codes + one 16-bit scale per row in a checkpoint


class FP8Linear(_RealLinear):
    """W8A8 FP8 e4m3 ("FP8 dynamic"): weights per output row, activations per token, torch._scaled_mm."""

    def __init__(self, Q_W: torch.Tensor, s_W: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype):
        super().__init__()
        self.register_buffer("Q_W", Q_W)  # [out, in] float8_e4m3fn, row-major: Q_W.t() is the column-major B
        self.register_buffer("s_W", s_W.reshape(1, -1).float())  # [1, out]
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_dtype = out_dtype

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: torch.nn.Linear) -> "FP8Linear":
        Q_W, s_W = quantize_fp8(linear.weight.float(), "e4m3", axis=1)  # per row: s [out, 1]
        return cls(Q_W, s_W, linear.bias, linear.weight.dtype)

    def prepare(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations X [tokens, in] -> (Q_X e4m3 [tokens, in], s_X [tokens, 1] float32): per token."""
        return quantize_fp8(X.float(), "e4m3", axis=1)

    def kernel(self, Q_X: torch.Tensor, s_X: torch.Tensor) -> torch.Tensor:
        """The FP8 GEMM with its scales applied in the epilogue (row-wise scaling wants a bf16 output)."""
        return torch._scaled_mm(Q_X, self.Q_W.t(), scale_a=s_X, scale_b=self.s_W, out_dtype=torch.bfloat16)

    def weight_bytes(self) -> int:
        return self.Q_W.numel() + self.s_W.numel() * 2


class Int4Linear(_RealLinear):
    """W4A16: int4 weights with one bf16 scale per group of input columns, bf16 activations, torch's int4 kernel."""

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int, out_features: int,
                 bias: torch.Tensor | None, out_dtype: torch.dtype):
        super().__init__()
        self.register_buffer("packed", packed)  # torch's int4 layout (device-specific tiling of the [out, in] codes)
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [in / group, out, 2] bf16: (s, z) per group
        self.group_size = group_size  # input columns per scale
        self.out_features = out_features
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_dtype = out_dtype

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = 128) -> "Int4Linear":
        """Quantize `linear` to symmetric int4 with `group_size` (the same grid as `llmlab.quant.rtn`)."""
        W = linear.weight.float()  # [out, in]
        if group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"torch's int4 kernel takes group sizes {INT4_GROUP_SIZES}; got {group_size}")
        check_group_size(W.shape[1], group_size, 4, where=f" (a Linear with in_features={W.shape[1]})")
        Q, s, _ = quantize(W, 4, group_size, symmetric=True)  # Q [out, in] in [-8, 7], s [out, in / group]
        return cls.from_codes(Q, s, group_size, linear.bias, linear.weight.dtype)

    @classmethod
    def from_codes(cls, Q: torch.Tensor, s: torch.Tensor, group_size: int, bias=None,
                   out_dtype: torch.dtype = torch.bfloat16) -> "Int4Linear":
        """From signed codes Q [out, in] in [-8, 7] and scales s [out, in / group] (Ŵ = s · Q, groups of columns)."""
        q = (Q + 8).to(torch.int32)  # unsigned codes 0..15; the kernel computes (q − 8) · s + z
        in_features = q.shape[1]
        tiles = next((t for t in INT4_INNER_K_TILES if in_features % (16 * t) == 0), None)
        if tiles is None:
            raise ValueError(f"torch's int4 kernel needs in_features divisible by 32; got {in_features}")
        if q.is_cuda:  # CUDA layout input: two codes per byte, [out, in / 2] uint8, high nibble first
            packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), tiles)
        else:
            packed = torch._convert_weight_to_int4pack_for_cpu(q, tiles)
        scales = s.t().to(torch.bfloat16)  # [out, n_groups] -> [n_groups, out]
        scales_and_zeros = torch.stack([scales, torch.zeros_like(scales)], dim=-1).contiguous()  # [n_groups, out, 2]
        return cls(packed, scales_and_zeros, group_size, Q.shape[0], bias, out_dtype)

    def prepare(self, X: torch.Tensor) -> tuple[torch.Tensor]:
        return (X.to(torch.bfloat16),)  # W4A16: activations stay 16-bit

    def kernel(self, X: torch.Tensor) -> torch.Tensor:
        """The W4A16 GEMM: codes unpacked and scaled inside the kernel."""
        if X.is_cuda:
            return torch._weight_int4pack_mm(X, self.packed, self.group_size, self.scales_and_zeros)
        return torch._weight_int4pack_mm_for_cpu(X, self.packed, self.group_size, self.scales_and_zeros)

    def weight_bytes(self) -> int:
        n_groups, out_features, _ = self.scales_and_zeros.shape
        return out_features * n_groups * self.group_size // 2 + n_groups * out_features * 2  # codes + bf16 scales


class W4A16Linear(_RealLinear):
    """W4A16 through our Triton kernel: the compressed-tensors "pack-quantized" tensors our exports write, used as they
    are (int32 words [out, in / 8], one scale per group), dequantized in registers inside the GEMM
    (`llmlab.quant.triton_w4a16`). On CPU, the PyTorch reference computes the same numbers (or, with
    TRITON_INTERPRET=1, Triton's interpreter runs the kernel itself)."""

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int,
                 bias: torch.Tensor | None, out_dtype: torch.dtype):
        import llmlab.quant.triton_w4a16  # noqa: F401 (registers torch.ops.llmlab.w4a16_matmul)

        super().__init__()
        self.register_buffer("packed", packed.contiguous())  # [out, in / 8] int32: weight_packed
        self.register_buffer("scales", scales)  # [out, in / group] in the activations' 16-bit dtype: weight_scale
        self.register_buffer("zeros", zeros)  # [out, in / group] int8 signed zero points, or None (symmetric grid)
        self.group_size = group_size  # input columns per scale
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_dtype = out_dtype  # dtype of the output (the model's activations dtype)

    @staticmethod
    def _activation_dtype(dtype: torch.dtype) -> torch.dtype:
        return dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16  # the kernel takes 16-bit x

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = 128) -> "W4A16Linear":
        """Quantize `linear` to symmetric int4 with `group_size` (round to nearest, the grid of `llmlab.quant.rtn`)
        and pack it in the compressed-tensors layout."""
        W = linear.weight.float()  # [out, in]
        check_group_size(W.shape[1], group_size, 4, where=f" (a Linear with in_features={W.shape[1]})")
        Q, s, _ = quantize(W, 4, group_size, symmetric=True)  # Q [out, in] in [-8, 7], s [out, in / group]
        dtype = linear.weight.dtype
        return cls(pack_int4(Q), s.to(cls._activation_dtype(dtype)), None, group_size, linear.bias, dtype)

    @classmethod
    def from_exported(cls, tensors: dict[str, torch.Tensor], bias: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.bfloat16) -> "W4A16Linear":
        """From one Linear's tensors in a compressed-tensors checkpoint (`export_compressed_tensors`, or
        llm-compressor's): weight_packed, weight_scale, and weight_zero_point when asymmetric, weight_shape if there.
        `dtype`: the activations' and output's dtype (the scales are stored in it)."""
        from llmlab.quant.triton_w4a16 import unpack_zero_points

        packed, scales = tensors["weight_packed"], tensors["weight_scale"]  # [out, in / 8], [out, n_groups]
        out_features, in_features = packed.shape[0], packed.shape[1] * NIBBLES_PER_WORD
        if "weight_shape" in tensors and tuple(tensors["weight_shape"].tolist()) != (out_features, in_features):
            raise ValueError(f"weight_shape {tensors['weight_shape'].tolist()} is not the packed [{out_features}, "
                             f"{in_features}]: in_features must be a multiple of 8 for the w4a16 kernel")
        zeros = tensors.get("weight_zero_point")
        zeros = None if zeros is None else unpack_zero_points(zeros, out_features)
        return cls(packed, scales.to(cls._activation_dtype(dtype)), zeros, in_features // scales.shape[1], bias,
                   dtype)

    def prepare(self, X: torch.Tensor) -> tuple[torch.Tensor]:
        return (X.to(self.scales.dtype),)  # W4A16: activations stay 16-bit

    def kernel(self, X: torch.Tensor) -> torch.Tensor:
        """The W4A16 GEMM: codes unpacked and scaled inside the Triton kernel (an opaque op for torch.compile)."""
        from llmlab.quant import triton_w4a16

        if X.is_cuda:
            if torch.compiler.is_compiling():  # what torch.compile traces: the custom op, opaque
                return torch.ops.llmlab.w4a16_matmul(X, self.packed, self.scales, self.zeros, self.group_size)
            # eager: the call itself (the custom op's dispatch adds 20-25 µs of host time per call, measured on the
            # H100's host: as much as the kernel's GPU time at 8B shapes)
            return triton_w4a16.w4a16_matmul(X, self.packed, self.scales, self.zeros, self.group_size)

        run = triton_w4a16.w4a16_matmul if triton_w4a16.interpreting() else triton_w4a16.dequantize_then_matmul
        return run(X, self.packed, self.scales, self.zeros, self.group_size)

    def weight_bytes(self) -> int:
        zero_bytes = 0 if self.zeros is None else self.zeros.numel() // 2  # packed 8 per int32 in a checkpoint
        return self.packed.numel() * 4 + self.scales.numel() * 2 + zero_bytes


def real_linear(linear: torch.nn.Linear, kernel: str, group_size: int = 128) -> torch.nn.Module:
    """`linear` converted to the module that runs `kernel` (bf16: the same Linear in bf16)."""
    _check_kernel(kernel)
    if kernel == "bf16":
        return linear.to(torch.bfloat16)
    if kernel == "int8":
        return Int8Linear.from_linear(linear)
    if kernel == "fp8":
        return FP8Linear.from_linear(linear)
    if kernel == "w4a16":
        return W4A16Linear.from_linear(linear, group_size)
    return Int4Linear.from_linear(linear, group_size)


@torch.no_grad()
def convert_model(model, kernel: str, group_size: int = 128, names=None) -> list[str]:
    """Swap the decoder-layer linears of `model` (or the Linear modules `names`) for real-kernel modules, in place.

    The rest of the model (embeddings, norms, lm_head) should already be bf16: `model.to(torch.bfloat16)` first.
    Returns the names converted.
    """
    from llmlab.quant.mappings import quantizable_linears

    linears = quantizable_linears(model) if names is None else {n: model.get_submodule(n) for n in names}
    if kernel in ("int4", "w4a16"):
        for name, linear in linears.items():
            check_group_size(linear.in_features, group_size, 4, where=f" (the in_features of {name})")
    for name, linear in linears.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, real_linear(linear, kernel, group_size))
    return list(linears)


# ---------------------------------------------------------------- timing one GEMM


@dataclass
class GemmTiming:
    """One kernel at one shape: Y [M, N] = X [M, K] · Wᵀ."""

    kernel: str
    M: int  # tokens (rows of X): 1 for single-stream decode, thousands for prefill
    N: int  # output features
    K: int  # input features
    ms: float  # median milliseconds per call (scope "layer": activation quantization included for fp8 / int8)
    tflops: float  # 2·M·N·K / time
    gbps: float  # (weight bytes + input + output bytes) / time
    weight_bytes: int  # bytes of the weight in its format, scales included


def _weight_bytes(kernel: str, N: int, K: int, group_size: int) -> int:
    return {"bf16": 2 * N * K, "fp8": N * K + 2 * N, "int8": N * K + 2 * N,
            "int4": N * K // 2 + 2 * N * (K // group_size), "w4a16": N * K // 2 + 2 * N * (K // group_size)}[kernel]


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn, repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for i in range(repeats):
                start.record()
                fn(i)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            return sorted(times)[len(times) // 2]
    else:
        def run(fn, repeats):
            times = []
            for i in range(repeats):
                start = time.perf_counter()
                fn(i)
                times.append((time.perf_counter() - start) * 1e3)
            return sorted(times)[len(times) // 2]
    return run


@torch.no_grad()
def gemm_sweep(kernel: str, N: int, K: int, Ms=(1, 16, 256, 4096), device="cuda", group_size: int = 128,
               repeats: int = 50, rotate_bytes: int = 256 * 2**20, seed: int = 0,
               scope: str = "gemm") -> list[GemmTiming]:
    """Median time of Y = X Wᵀ for `kernel` with W [N, K] and X [M, K] for each M in `Ms`, random data.

    scope "gemm": the low-precision GEMM alone, activations already quantized (serving engines fuse the activation
    quantization into the previous kernel); "layer": our whole module call, with its unfused activation quantization
    (several elementwise kernels in eager PyTorch). Several weight copies totalling `rotate_bytes` (≥ 5× an H100's
    50 MB L2) are used in turn so the weights come from memory, as in a model whose layers do not fit in cache."""
    if scope not in ("gemm", "layer"):
        raise ValueError(f"scope={scope!r}; choose 'gemm' (the kernel alone) or 'layer' (the module call)")
    _check_kernel(kernel)
    device = torch.device(device)
    ok, reason = kernel_available(kernel, device)
    if not ok:
        raise RuntimeError(reason)
    generator = torch.Generator(device=device).manual_seed(seed)
    weight_bytes = _weight_bytes(kernel, N, K, group_size)
    copies = max(1, min(16, -(-rotate_bytes // weight_bytes))) if device.type == "cuda" else 1
    layers = []
    for _ in range(copies):
        linear = torch.nn.Linear(K, N, bias=False, device=device)
        linear.weight.copy_(torch.randn(N, K, generator=generator, device=device) * K ** -0.5)
        layers.append(real_linear(linear, kernel, group_size))
        del linear
    timer = _timer(device)
    timings = []
    for M in Ms:
        X = torch.randn(M, K, generator=generator, device=device).to(torch.bfloat16)
        if scope == "layer" or kernel == "bf16":
            calls = [lambda layer=layer: layer(X) for layer in layers]
        else:
            calls = [lambda layer=layer, args=layer.prepare(X): layer.kernel(*args) for layer in layers]
        for call in calls:  # warm-up: kernel selection, lazy initialisation
            call()
        seconds = timer(lambda i: calls[i % copies](), repeats) / 1e3
        moved = weight_bytes + 2 * M * K + 2 * M * N
        timings.append(GemmTiming(kernel, M, N, K, seconds * 1e3, 2 * M * N * K / seconds / 1e12,
                                  moved / seconds / 1e9, weight_bytes))
    return timings


def benchmark_gemm(kernel: str, M: int, N: int, K: int, device="cuda", group_size: int = 128, repeats: int = 50,
                   seed: int = 0) -> GemmTiming:
    """One kernel at one shape (see `gemm_sweep`)."""
    return gemm_sweep(kernel, N, K, (M,), device, group_size, repeats, seed=seed)[0]


def layer_gemm_shapes(spec) -> dict[str, tuple[int, int]]:
    """The GEMMs of one decoder layer of `spec` (a `llmlab.models.ModelSpec`) as serving engines run them, with the
    projections that share an input fused (vLLM's QKVParallelLinear and MergedColumnParallelLinear): name -> (N, K)."""
    d, f, hd = spec.hidden_size, spec.intermediate_size, spec.head_dim
    return {
        "qkv_proj": ((spec.num_attention_heads + 2 * spec.num_kv_heads) * hd, d),  # q, k, v stacked: [(H + 2K)·hd, d]
        "o_proj": (d, spec.num_attention_heads * hd),
        "gate_up_proj": (2 * f, d),
        "down_proj": (d, f),
    }


def speedups(rows: list[dict], model: str, baseline: str = "bf16") -> dict[str, dict[int, float]]:
    """{kernel: {M: speedup over `baseline`}} for one model's stored GEMM rows (`benchmark rows`: model, linear, M,
    kernel, ms): the time of the whole layer (all its GEMMs summed), baseline time / kernel time."""
    totals: dict[tuple[str, int], float] = {}
    for row in rows:
        if row["model"] == model:
            totals[row["kernel"], row["M"]] = totals.get((row["kernel"], row["M"]), 0.0) + row["ms"]
    if not totals:
        raise LookupError(f"no rows for {model!r}; the stored models are {sorted({r['model'] for r in rows})}")
    result: dict[str, dict[int, float]] = {}
    for (kernel, M), ms in sorted(totals.items(), key=lambda item: (item[0][0], item[0][1])):
        if kernel != baseline and (baseline, M) in totals:
            result.setdefault(kernel, {})[M] = totals[baseline, M] / ms
    return result
