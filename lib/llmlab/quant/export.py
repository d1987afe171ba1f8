"""Export a fake-quantized model to the checkpoint formats serving engines load, and load such a checkpoint back.

Our quantizers (`rtn`, `gptq`, `awq`) fake-quantize in place: each quantized Linear keeps float weights, but every
weight is a grid value Ŵ = s · Q (symmetric grid: zero point 0, Q an integer in [−2^(k−1), 2^(k−1) − 1], one scale s
per row and group of `group_size` input columns). A serving engine wants the integers and the scales instead:

1. `grid_codes` recovers (Q, s) from Ŵ *exactly*: in a group, the smallest nonzero |Ŵ| is almost always the code ±1,
   so s = that value; Q = round(Ŵ / s); and the pair is accepted only if s · Q reproduces every float of Ŵ bit for
   bit (the same float32 product the quantizers computed). The rare group without a ±1 code tries codes 2…2^(k−1) for
   its smallest weight (and the neighbouring floats of the division). A weight that is not on such a grid is refused:
   this is also how an unquantized model is caught.
2. `export_compressed_tensors` writes the compressed-tensors "pack-quantized" format (what llm-compressor writes and
   vLLM loads as W4A16 / W8A16 "WNA16"): per quantized Linear `weight_packed` int32 [out, in·bits/32], `weight_scale`
   [out, n_groups], `weight_shape` [2] (no `weight_zero_point`: symmetric), and in config.json a
   `quantization_config` with quant_method "compressed-tensors", format "pack-quantized", one config group
   (targets ["Linear"], the weight arguments: num_bits, type int, symmetric, strategy group/channel, group_size) and
   `ignore` = every Linear not quantized (lm_head). The tensors come from compressed-tensors' own compressor
   (`PackedQuantizationCompressor.compress`) and the config block from its `QuantizationConfig` and
   `ModelCompressor.update_config`, so the format is the library's; transformers' `save_pretrained` writes the files
   (tests/test_export.py: the folder equals, tensor for tensor, what llm-compressor's own save_pretrained writes).
   vLLM serves it on GPU (`vllm serve FOLDER`; it reads the format from config.json, no `--quantization` flag) — in
   fp16/bf16: export with `dtype=torch.float16` or let vLLM downcast the float32 checkpoint.
3. `export_awq_gemm` writes the AutoAWQ "GEMM" layout (casper-hansen/AutoAWQ `WQLinear_GEMM`), what
   `vllm serve FOLDER --quantization awq` reads on GPU: per Linear `qweight` int32 [in, out/8] (transposed, AWQ's
   interleaved nibble order, `llmlab.quant.packing.pack_awq`), `qzeros` int32 [in/g, out/8], `scales` float16
   [in/g, out]; everything else in float16; config.json `quantization_config` = {quant_method "awq", bits 4,
   group_size, zero_point true, version "gemm", modules_to_not_convert}. AWQ's grid is unsigned with a zero point z:
   Ŵ = s · (q − z). Our signed code Q ∈ [−8, 7] is q = Q + 8 with z = 8, so q − z = Q exactly; only the scales change,
   rounded to float16 (relative error ≤ 2⁻¹¹). transformers would need gptqmodel or autoawq to load this layout (not
   installed here): `load_exported` dequantizes it with our own unpacker instead.
4. `load_exported(folder)` gives back a plain float model: compressed-tensors through transformers (its integration
   decompresses the packed weights on CPU), AWQ GEMM through `dequantize_awq_gemm`. `compare_logits` measures how
   far its logits (`window_logits`) are from the fake-quantized model's.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.quant.driver import _threads
from llmlab.quant.formats import check_bits, check_group_size, int_range
from llmlab.quant.packing import INT4_OFFSET, pack_awq, unpack_awq

AWQ_ZERO_POINT = INT4_OFFSET  # the zero point our symmetric 4-bit grid takes in AWQ's unsigned layout


# ---------------------------------------------------------------- integer codes from grid values


def grid_codes(W: torch.Tensor, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q int8 [out, in], s float32 [out, n_groups]) with s · Q == W bit for bit, for W [out, in] fake-quantized on a
    symmetric `bits` grid per row and group (group_size None: one group per row). ValueError if W is not such a grid.
    Q and s are the quantizer's own whenever the group holds a code ±1 (nearly always at 2 to 4 bits)."""
    check_bits(bits)
    out_features, in_features = W.shape
    check_group_size(in_features, group_size, bits)
    g = group_size or in_features
    q_min, q_max = int_range(bits, symmetric=True)
    Wg = W.detach().float().reshape(-1, g)  # [out, in] -> [out · n_groups, g]: one row per group
    magnitude = Wg.abs()
    smallest = torch.where(magnitude > 0, magnitude, torch.inf).amin(dim=1, keepdim=True)  # [groups, 1]
    s = torch.where(torch.isinf(smallest), torch.ones_like(smallest), smallest)  # all-zero group: s = 1, Q = 0
    Q, ok = _fit(Wg, s, q_min, q_max)  # the smallest nonzero weight is the code ±1: s is that weight, exactly
    bad = (~ok).squeeze(1).nonzero().squeeze(1)  # groups without a ±1 code (rare)
    if len(bad):
        s[bad], Q[bad], ok[bad] = _other_codes(Wg[bad], smallest[bad], q_min, q_max)
    if not ok.all():
        raise ValueError(f"{(~ok).sum().item()} of {ok.numel()} groups of {g} weights are not on a symmetric "
                         f"int{bits} grid: export needs a model quantized in place by rtn/gptq/awq (symmetric=True) "
                         "with these bits and group size; was this model quantized, and with this report?")
    return Q.reshape(out_features, in_features).to(torch.int8), s.reshape(out_features, in_features // g)


def _fit(Wg: torch.Tensor, s: torch.Tensor, q_min: int, q_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes Q = round(Wg / s) [groups, g], and per group [groups, 1] whether s · Q gives back every float of Wg with
    every code in [q_min, q_max]."""
    Q = torch.round(Wg / s)
    ok = ((s * Q) == Wg).all(dim=1, keepdim=True) & (Q.amin(1, keepdim=True) >= q_min) & \
        (Q.amax(1, keepdim=True) <= q_max)
    return Q, ok


def _other_codes(Wg: torch.Tensor, smallest: torch.Tensor, q_min: int, q_max: int):
    """(s, Q, ok) for groups Wg [n, g] whose smallest nonzero magnitude `smallest` [n, 1] is not the code ±1: try
    ±2, ±3, … — s = smallest / code, and the floats either side of it, since that division rounds."""
    s, Q, ok = torch.ones_like(smallest), torch.zeros_like(Wg), torch.zeros_like(smallest, dtype=torch.bool)
    for code in range(2, max(-q_min, q_max) + 1):
        candidate = smallest / code
        for guess in (candidate, torch.nextafter(candidate, candidate * 2), torch.nextafter(candidate, candidate * 0)):
            Q_guess, ok_guess = _fit(Wg, guess, q_min, q_max)
            take = ok_guess & ~ok
            s, Q, ok = torch.where(take, guess, s), torch.where(take, Q_guess, Q), ok | ok_guess
        if ok.all():
            break
    return s, Q, ok


# ---------------------------------------------------------------- which linears, and refusals


def quantized_linears(model, report) -> dict[str, torch.nn.Linear]:
    """Full name -> Linear for every module `report.quantized` lists, checked against the model."""
    if not getattr(report, "quantized", None):
        raise ValueError("the report lists no quantized Linear: quantize the model first (rtn_quantize_model, "
                         "gptq_quantize_model or awq_quantize_model) and pass the report it returns")
    if getattr(model, "hf_quantizer", None) is not None or any(hasattr(module, "quantization_scheme")
                                                               for module in model.modules()):
        raise ValueError("this model was loaded from a quantized checkpoint; export the fake-quantized model that "
                         "rtn/gptq/awq produced instead")
    modules = dict(model.named_modules())
    missing = [name for name in report.quantized if name not in modules]
    if missing:
        raise ValueError(f"the report names modules this model lacks ({missing[0]}, …): pass the model it was made on")
    linears = {name: modules[name] for name in report.quantized}
    for name, linear in linears.items():
        check_group_size(linear.in_features, report.group_size, report.bits, where=f" (the in_features of {name})")
    return linears


def _other_linears(model, linears: dict) -> list[str]:
    """Names of the Linear modules the report did not quantize (lm_head): kept in 16/32-bit, listed as ignored."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name not in linears]


def _save_with(model, tokenizer, folder: Path, state_dict: dict, config_update: dict) -> Path:
    """Write `state_dict` with transformers' save_pretrained (sharding, tied weights, generation config), then merge
    `config_update` into config.json, and save the tokenizer beside it."""
    folder = Path(folder)
    model.save_pretrained(folder, state_dict=state_dict)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config.update(config_update)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def _state_dict_in(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's state dict with floating tensors in `dtype`; a tensor shared by two names (tied embeddings and
    lm_head) is kept once, under its first name, as transformers keeps it."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")  # torch.float16 -> "float16", as config.json writes it


# ---------------------------------------------------------------- compressed-tensors pack-quantized


def compressed_tensors_config(model, report, linears: dict | None = None):
    """compressed-tensors' QuantizationConfig for a model our quantizers produced (symmetric int weights, group or
    per-row scales, activations in 16-bit): one config group targeting Linear, the other Linears ignored."""
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 QuantizationStatus)

    linears = linears if linears is not None else quantized_linears(model, report)
    weights = QuantizationArgs(num_bits=report.bits, type="int", symmetric=True,
                               strategy="group" if report.group_size else "channel", group_size=report.group_size)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights, format="pack-quantized")
    return QuantizationConfig(config_groups={"group_0": scheme}, ignore=_other_linears(model, linears),
                              format="pack-quantized", quantization_status=QuantizationStatus.COMPRESSED)


def export_compressed_tensors(model, tokenizer, report, folder, dtype: torch.dtype | None = None) -> Path:
    """Write `model` (fake-quantized in place, as `report` says) as a compressed-tensors pack-quantized checkpoint in
    `folder`; return the folder. `dtype`: of the scales and of every unquantized tensor (None: the model's, which
    keeps the export exact; torch.float16 or torch.bfloat16 halves their bytes and rounds the scales)."""
    from compressed_tensors.compressors import BaseCompressor, ModelCompressor

    linears = quantized_linears(model, report)
    config = compressed_tensors_config(model, report, linears)
    scheme = config.config_groups["group_0"]
    compressor = BaseCompressor.get_value_from_registry(config.format)  # PackedQuantizationCompressor
    dtype = dtype or model.dtype
    state = _state_dict_in(model, dtype)
    with torch.no_grad(), _threads(1):  # elementwise work: one thread (two stall each other on a shared CPU: 8x)
        for name, linear in linears.items():
            _, s = grid_codes(linear.weight, report.bits, report.group_size)  # [out, n_groups]
            local = {"weight": linear.weight.detach().float(), "weight_scale": s.to(dtype)}
            for key, value in compressor.compress(local, scheme).items():  # weight_packed, weight_scale, weight_shape
                state[f"{name}.{key}"] = value
            del state[f"{name}.weight"]
    folder = _save_with(model, tokenizer, Path(folder), state, {"dtype": _dtype_name(dtype)})
    ModelCompressor(quantization_config=config).update_config(str(folder))  # llm-compressor's last step too
    return folder


# ---------------------------------------------------------------- AutoAWQ GEMM


def awq_gemm_tensors(Q: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
    """AutoAWQ GEMM tensors of one Linear from signed 4-bit codes Q [out, in] and scales s [out, n_groups]:
    qweight int32 [in, out/8], qzeros int32 [in/g, out/8] (all 8), scales float16 [in/g, out]."""
    out_features, in_features = Q.shape
    if out_features % 8:
        raise ValueError(f"the AWQ GEMM layout packs 8 output channels per int32; out_features={out_features} is "
                         "not a multiple of 8: export this model with export_compressed_tensors instead")
    q = (Q.to(torch.int32) + AWQ_ZERO_POINT).T.contiguous()  # [out, in] -> [in, out], unsigned in [0, 15]
    zeros = torch.full((s.shape[1], out_features), AWQ_ZERO_POINT, dtype=torch.int32)  # [n_groups, out]
    return {"qweight": pack_awq(q), "qzeros": pack_awq(zeros), "scales": s.T.contiguous().to(torch.float16)}


def dequantize_awq_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """W [out, in] (float32) from AutoAWQ GEMM tensors: (q − z) · s per group, what AWQ's kernels compute on GPU."""
    q, z = unpack_awq(qweight), unpack_awq(qzeros)  # [in, out], [n_groups, out]
    group_size = q.shape[0] // z.shape[0]
    z = z.repeat_interleave(group_size, dim=0)  # [n_groups, out] -> [in, out]
    s = scales.float().repeat_interleave(group_size, dim=0)  # [n_groups, out] -> [in, out]
    return ((q - z).float() * s).T.contiguous()  # [in, out] -> [out, in]


def export_awq_gemm(model, tokenizer, report, folder) -> Path:
    """Write `model` (fake-quantized in place at 4 bits with groups, as `report` says) in the AutoAWQ GEMM layout,
    all in float16, in `folder`; return the folder. vLLM loads it on GPU with `--quantization awq`."""
    if report.bits != 4:
        raise ValueError(f"the AWQ GEMM layout stores 4-bit weights only; this model is int{report.bits}: use "
                         "export_compressed_tensors (pack-quantized stores 2 to 8 bits)")
    if report.group_size is None:
        raise ValueError("the AWQ GEMM layout needs a group size (one scale per group of input columns); quantize "
                         "with group_size=64 (or another size dividing in_features), or use export_compressed_tensors")
    linears = quantized_linears(model, report)
    state = _state_dict_in(model, torch.float16)
    with torch.no_grad(), _threads(1):
        for name, linear in linears.items():
            Q, s = grid_codes(linear.weight, report.bits, report.group_size)
            del state[f"{name}.weight"]
            state.update({f"{name}.{key}": value for key, value in awq_gemm_tensors(Q, s).items()})
    ignored = [name for name in _other_linears(model, linears) if name != "lm_head"]
    quantization_config = {"quant_method": "awq", "bits": 4, "group_size": report.group_size, "zero_point": True,
                           "version": "gemm", "modules_to_not_convert": ignored or None}
    return _save_with(model, tokenizer, Path(folder), state,
                      {"quantization_config": quantization_config, "dtype": "float16"})


# ---------------------------------------------------------------- loading back


def exported_format(folder) -> str:
    """'compressed-tensors' or 'awq', read from config.json's quantization_config."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} holds no config.json: pass a folder written by export_compressed_tensors or "
                         "export_awq_gemm")
    method = json.loads(config_path.read_text()).get("quantization_config", {}).get("quant_method")
    if method not in ("compressed-tensors", "awq"):
        raise ValueError(f"{folder}'s config.json has quant_method {method!r}; load_exported reads "
                         "'compressed-tensors' and 'awq' checkpoints (load others with llmlab.zoo.load_model)")
    return method


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(path))
    return state


def load_exported(folder, dtype: torch.dtype = torch.float32, progress: bool = False):
    """The model in `folder` with its quantized weights dequantized, in `dtype`, on CPU, in eval mode.

    compressed-tensors: transformers' compressed-tensors integration (`dequantize=True`: weights unpacked at load).
    AWQ GEMM: the config without its quantization_config builds a plain model, and `dequantize_awq_gemm` fills each
    quantized Linear (transformers itself would need gptqmodel or autoawq for this layout).
    progress=False hides compressed-tensors' progress bars (they write to stderr).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, CompressedTensorsConfig
    from transformers.initialization import no_init_weights

    folder = Path(folder)
    if exported_format(folder) == "compressed-tensors":
        with contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings(), _threads(1):
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")  # we pass only `dequantize`
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype,
                                                         quantization_config=CompressedTensorsConfig(dequantize=True))
        return model.eval()
    config = AutoConfig.from_pretrained(folder)
    del config.quantization_config
    with no_init_weights():  # every tensor is loaded below: skip the random initialization (seconds)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = _read_safetensors(folder)
    with _threads(1):
        for name in [key.removesuffix(".qweight") for key in state if key.endswith(".qweight")]:
            state[f"{name}.weight"] = dequantize_awq_gemm(state.pop(f"{name}.qweight"), state.pop(f"{name}.qzeros"),
                                                          state.pop(f"{name}.scales"))
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise ValueError(f"{folder} does not match its config: missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.eval()


# ---------------------------------------------------------------- checking a reload


@dataclass
class LogitComparison:
    """How close two models' logits are on the same windows."""

    max_abs_difference: float  # max |logit_a − logit_b| over every position and vocabulary entry
    max_abs_logit: float  # max |logit_a|: the scale the difference is read against
    top1_agreement: float  # fraction of positions where both models predict the same next token
    tokens: int  # positions compared


@torch.no_grad()
def window_logits(model, ids: torch.Tensor, seq_len: int = 256, windows: int = 1) -> torch.Tensor:
    """Logits [windows, seq_len, vocab] (float32) of `model` on the first `windows` windows of `seq_len` tokens of
    `ids` ([1, n]): keep these, free the model, then load the other one (two models at once may not fit)."""
    ids = ids.reshape(-1)  # [1, n] -> [n]
    if ids.numel() < seq_len * windows:
        raise ValueError(f"window_logits needs {seq_len * windows} tokens, got {ids.numel()}; pass fewer windows")
    batch = ids[: seq_len * windows].view(windows, seq_len)  # [n] -> [windows, seq_len]
    device = next(model.parameters()).device
    return model(batch.to(device), use_cache=False).logits.float().cpu()


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> LogitComparison:
    """How far `other` logits are from `reference` logits (same shape [..., vocab], e.g. from `window_logits`)."""
    if reference.shape != other.shape:
        raise ValueError(f"logits of shapes {tuple(reference.shape)} and {tuple(other.shape)} cannot be compared; "
                         "compute both with window_logits on the same ids, seq_len and windows")
    return LogitComparison((reference - other).abs().max().item(), reference.abs().max().item(),
                           (reference.argmax(-1) == other.argmax(-1)).float().mean().item(),
                           reference[..., 0].numel())
