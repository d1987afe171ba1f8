"""LLM.int8() and NF4 through bitsandbytes, beside a from-scratch LLM.int8() matmul.

LLM.int8() (Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale", arXiv 2208.07339,
§3): a 16-bit product X·Wᵀ (X [tokens, in], W [out, in]) is split by input feature. Feature dims h where some
|X[:, h]| ≥ α (α = 6.0, the paper's threshold) form the outlier set O and are multiplied in 16-bit; every other dim
goes through vector-wise int8 quantization — one absmax scale per row of X (s_x) and per output row of W (s_w):

    X·Wᵀ ≈ Σ_{h ∈ O} X_h W_hᵀ + (s_x ⊗ s_w) / 127² · (C_x · C_wᵀ),    C = round(127 · row / absmax(row))

(eq. 3 and §3.2). Outlier dims are few and systematic (the paper finds about 6 feature dims carrying them in a 6.7B
model), so almost all the work runs on int8 tensor cores. `llm_int8_matmul` writes this in a dozen lines; bitsandbytes' `Linear8bitLt`
(`MatMul8bitLt` → `int8_vectorwise_quant` + `int8_mixed_scaled_mm`) is the reference. It departs from the paper in
two small places (its weight lives only in int8, so the 16-bit outlier part uses W's dequantized int8 columns; a
row's activation scale is taken with only the outlier *elements* zeroed); `bitsandbytes_layout=True` reproduces both.

NF4 (Dettmers et al., "QLoRA", arXiv 2305.14314, §3): blocks of 64 weights, each divided by its absmax and snapped to
16 quantiles of N(0, 1); `llmlab.quant.formats.quantize_nf4` is the from-scratch version and equals
`bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")` code for code.

`load_bnb` loads a whole model through transformers' `BitsAndBytesConfig`; bitsandbytes 0.50 (the version tested
here) runs both on CPU too (int8 through torch ops, with `torch._int_mm` on AVX-512 CPUs; NF4 through its CPU library), so the
course measures them here. `bnb_available` says whether a device can, by running a tiny product, not by guessing from version numbers.
"""

from __future__ import annotations

import functools
import time

import torch

BNB_KINDS = ("int8", "nf4")
LLM_INT8_THRESHOLD = 6.0  # α of LLM.int8() §3.2: a feature dim with any |x| ≥ α is an outlier dim
NF4_BLOCKSIZE = 64  # bitsandbytes' default 4-bit block (QLoRA)
COMPUTE_DTYPE = {"int8": torch.float16, "nf4": torch.bfloat16}  # what the rest of the model runs in: bitsandbytes'
# int8 matmul takes fp16 inputs; QLoRA computes in bf16


def _check_kind(kind: str) -> None:
    if kind not in BNB_KINDS:
        raise ValueError(f"unknown bitsandbytes kind {kind!r}; choose 'int8' (LLM.int8) or 'nf4' (QLoRA 4-bit)")


# ---------------------------------------------------------------- LLM.int8(), from scratch


def int8_vectorwise(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, s): each row of X [rows, n] in int8 with its own absmax scale, C = round(127 · X / s) (ties to even, as
    bitsandbytes), s [rows] float32; an all-zero row gets C = 0."""
    s = X.float().abs().amax(dim=1)  # [rows]
    C = torch.round(X.float() * (127.0 / torch.where(s > 0, s, torch.ones_like(s)))[:, None])  # [rows, n]
    return C.to(torch.int8), s


def outlier_dims(X: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD) -> torch.Tensor:
    """Indices of the feature dims (columns of X [..., n]) where some |x| ≥ threshold: LLM.int8()'s set O."""
    return torch.nonzero((X.reshape(-1, X.shape[-1]).abs() >= threshold).any(dim=0)).flatten()


def int8_matmul_dequant(C_x: torch.Tensor, s_x: torch.Tensor, C_w: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    """(s_x ⊗ s_w) / 127² · (C_x · C_wᵀ): the int8 product, summed exactly as an int32 accumulator would, then
    rescaled to float32."""
    accumulated = C_x.double() @ C_w.double().T  # [tokens, out]; float64 holds these integer sums exactly, any device
    return accumulated.float() * (s_x[:, None] * s_w[None, :]) / 127**2


def llm_int8_matmul(X: torch.Tensor, W: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD,
                    bitsandbytes_layout: bool = False) -> torch.Tensor:
    """LLM.int8()'s X·Wᵀ for X [..., in] and a 16-bit weight W [out, in]: outlier dims (|x| ≥ threshold) in 16-bit,
    the rest vector-wise int8 (W's codes and scales per output row, computed once as a checkpoint stores them).
    Returns [..., out] in X's dtype.

    bitsandbytes_layout=True reproduces bitsandbytes' inference kernel, which departs from the paper twice: its
    weight exists only in int8, so the 16-bit part multiplies W's dequantized int8 columns; and a row's activation
    scale is taken with only the outlier *elements* zeroed (the rest of an outlier column still counts)."""
    X2 = X.reshape(-1, X.shape[-1]).half().float()  # [..., in] -> [tokens, in], the values of a 16-bit model
    W16 = W.half().float()  # [out, in]
    O = outlier_dims(X2, threshold)  # [n_outliers]
    regular = X2.clone()
    if bitsandbytes_layout:
        regular[regular.abs() >= threshold] = 0
    else:
        regular[:, O] = 0  # eq. 3: the int8 part sees only the dims h ∉ O
    C_x, s_x = int8_vectorwise(regular)  # [tokens, in], [tokens]
    C_x[:, O] = 0  # the outlier dims are multiplied in 16-bit below
    C_w, s_w = int8_vectorwise(W16)  # [out, in], [out]
    W_O = C_w[:, O].float() * s_w[:, None] / 127 if bitsandbytes_layout else W16[:, O]  # [out, n_outliers]
    Y = int8_matmul_dequant(C_x, s_x, C_w, s_w) + X2[:, O] @ W_O.T  # [tokens, out]
    return Y.reshape(*X.shape[:-1], W.shape[0]).to(X.dtype)


def vectorwise_int8_matmul(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The naive baseline: the same vector-wise int8 product with no outlier decomposition (threshold = ∞)."""
    return llm_int8_matmul(X, W, threshold=float("inf"))


# ---------------------------------------------------------------- bitsandbytes, layer by layer


def bnb_int8_linear(W: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD, device: str | torch.device = "cpu"):
    """A bitsandbytes `Linear8bitLt` holding W [out, in] (no bias), quantized to int8 on `device`, in eval mode."""
    import bitsandbytes as bnb

    out_features, in_features = W.shape
    layer = bnb.nn.Linear8bitLt(in_features, out_features, bias=False, has_fp16_weights=False, threshold=threshold)
    layer.weight = bnb.nn.Int8Params(W.detach().half(), requires_grad=False, has_fp16_weights=False)
    return layer.to(device).eval()  # moving the weight to a device quantizes it (weight: int8 CB, weight.SCB: scales)


def bnb_int8_codes(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(C_w int8 [out, in], s_w fp32 [out]) that a bitsandbytes `Linear8bitLt` stores (the scales move from
    weight.SCB to state.SCB at the first forward)."""
    SCB = getattr(layer.weight, "SCB", None)
    return layer.weight.data, SCB if SCB is not None else layer.state.SCB


def bnb_nf4_codes(W: torch.Tensor, blocksize: int = NF4_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' NF4 of W as (indices into the NF4 codebook, one per weight, W's shape; absmax [n_blocks]):
    `quantize_4bit` packs two codes per byte, the first weight in the high nibble."""
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(W.detach().float(), blocksize=blocksize, quant_type="nf4")  # [numel/2, 1] uint8
    packed = packed.reshape(-1)
    indices = torch.stack([packed >> 4, packed & 0x0F], dim=1)  # [numel/2, 2]: high nibble first
    return indices.reshape(W.shape), state.absmax


def bnb_nf4_dequantize(W: torch.Tensor, blocksize: int = NF4_BLOCKSIZE) -> torch.Tensor:
    """W through bitsandbytes' NF4 and back (float32), as its kernels see it."""
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(W.detach().float(), blocksize=blocksize, quant_type="nf4")
    return F.dequantize_4bit(packed, state).float()


# ---------------------------------------------------------------- availability


@functools.lru_cache(maxsize=None)
def _probe(device_type: str, kind: str) -> str | None:
    """Run a tiny bitsandbytes product of `kind` on a device type; None when it works, else the error's first line."""
    try:
        import bitsandbytes  # noqa: F401

        device = torch.device(device_type)
        W = torch.linspace(-1, 1, 64 * 64).reshape(64, 64)
        X = torch.linspace(-8, 8, 4 * 64).reshape(4, 64).to(device)
        if kind == "int8":
            layer = bnb_int8_linear(W, device=device)
            with torch.no_grad():
                layer(X.half())
        else:
            import bitsandbytes as bnb

            layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(W.bfloat16(), requires_grad=False, quant_type="nf4")
            layer = layer.to(device).eval()
            with torch.no_grad():
                layer(X.bfloat16())
        return None
    except Exception as error:  # any failure means "not on this device": the message says which
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def bnb_available(device: str | torch.device = "cpu", kind: str | None = None) -> tuple[bool, str]:
    """(True, what runs) or (False, why not and what to do): can bitsandbytes run int8 / nf4 (both when kind is None)
    on `device`? Answered by running a tiny product there."""
    try:
        import bitsandbytes
    except ImportError:
        return False, "bitsandbytes is not installed: pip install bitsandbytes (or the course's [quant] extra)"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA GPU; run on a GPU machine or pass device='cpu'"
    kinds = BNB_KINDS if kind is None else (kind,)
    for name in kinds:
        _check_kind(name)
        failure = _probe(device.type, name)
        if failure is not None:
            return False, (f"bitsandbytes {bitsandbytes.__version__} cannot run {name} on {device.type} ({failure}); "
                           f"use a CUDA GPU, or a bitsandbytes with a CPU backend (0.50 has one)")
    return True, f"bitsandbytes {bitsandbytes.__version__} runs {' and '.join(kinds)} on {device.type}"


# ---------------------------------------------------------------- whole models


def bnb_config(kind: str, threshold: float = LLM_INT8_THRESHOLD):
    """transformers' BitsAndBytesConfig for LLM.int8() (threshold α) or NF4 (blocks of 64, bf16 compute, no double
    quantization)."""
    from transformers import BitsAndBytesConfig

    _check_kind(kind)
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=False)


def load_bnb(kind: str, device: str | torch.device = "cpu", model: str | None = None):
    """(model, seconds): `model` (None: the embedded model's cached safetensors folder; else a folder or hub id)
    loaded through bitsandbytes as "int8" (LLM.int8, threshold 6.0) or "nf4" (QLoRA 4-bit) on `device`; the layers
    bitsandbytes leaves alone (embeddings, norms, tied lm_head) are in COMPUTE_DTYPE[kind]."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from llmlab.zoo import EMBEDDED, resolve

    _check_kind(kind)
    device = torch.device(device)
    ok, reason = bnb_available(device, kind)
    if not ok:
        raise ValueError(reason)
    transformers_logging.disable_progress_bar()
    start = time.perf_counter()
    source, _ = resolve(model or EMBEDDED)
    placement = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    loaded = AutoModelForCausalLM.from_pretrained(source, quantization_config=bnb_config(kind), device_map=placement,
                                                  dtype=COMPUTE_DTYPE[kind], use_safetensors=True)
    return loaded.eval(), time.perf_counter() - start


def bnb_weight_bytes(model) -> int:
    """Bytes a bitsandbytes model's weights occupy, its quantization scales included (`bnb_weight_parts`' total)."""
    return bnb_weight_parts(model)["total"]


def bnb_weight_parts(model) -> dict:
    """What a bitsandbytes model's weights occupy, part by part (bytes): the int8 / packed 4-bit codes, their scales
    (int8: one fp32 SCB per output row; NF4: one fp32 absmax per block of 64, plus the double-quantization tables when
    on), and every other parameter (embeddings, norms, tied lm_head) in its 16-bit dtype, tied tensors once."""
    import bitsandbytes as bnb

    codes = scales = 0
    quantized = set()
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            weight, SCB = bnb_int8_codes(module)
            codes += weight.numel() * weight.element_size()  # int8 [out, in]
            scales += SCB.numel() * SCB.element_size()  # fp32 [out]
            quantized.add(weight.data_ptr())
        elif isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            numel = torch.Size(state.shape).numel()
            codes += (numel + 1) // 2  # two 4-bit codes per byte (whatever layout the CPU kernel repacked them to)
            n_blocks = -(-numel // state.blocksize)
            if getattr(state, "nested", False) or getattr(state, "original_nested", False):
                scales += n_blocks + -(-n_blocks // 256) * 4  # 8-bit absmax + one fp32 per 256 absmax
            else:
                scales += n_blocks * 4  # one fp32 absmax per block
            quantized.add(module.weight.data_ptr())
    other, seen = 0, set(quantized)
    for parameter in model.parameters():
        if parameter.data_ptr() not in seen:
            seen.add(parameter.data_ptr())
            other += parameter.numel() * parameter.element_size()
    return {"codes": codes, "scales": scales, "other_16bit": other, "total": codes + scales + other}
