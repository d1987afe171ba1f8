"""SmoothQuant: move the activations' outliers into the weights, then quantize both to 8 bits (W8A8).

Xiao, Lin, Seznec, Wu, Demouth, Han, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models", arXiv 2211.10438 (ICML 2023). Mirrors mit-han-lab/smoothquant `smooth.py` (`smooth_ln_fcs`) and
`calibration.py` (`get_act_scales`).

A few input channels j of a linear layer carry activations 10-100× larger than the rest, in every token. One INT8 scale
per token must cover them, so the other channels round to a handful of levels. Weights have no such outliers. For any
s > 0, Y = X W = (X diag(s)⁻¹)(diag(s) W) (Eq. 3; W is [in, out] as in the paper: the Linear's weightᵀ), so
dividing channel j of X by s_j and multiplying row j of W by s_j changes nothing in float but moves quantization
difficulty from X to W. The migration strength α picks how much (Eq. 4):

    s_j = max|X_j|^α / max|W_j|^(1−α)

α = 0.5 splits it evenly; larger α pushes more into the weights. The division of X is never computed: it is folded
into the producer of X — the RMSNorm / LayerNorm weight (and bias) before q, k, v and before gate, up — and the
multiplication into the consumers' weight columns. The paper (§4) smooths exactly those norm → linear pairs, the
inputs of the attention block and of the MLP, where the outliers live; o_proj and down_proj are quantized unsmoothed
(v → o and up → down would fold too: AWQ uses them). Then every decoder linear runs W8A8 with per-token dynamic
activations (`llmlab.quant.w8a8`).
"""

from __future__ import annotations

import time

import torch

from llmlab.quant.driver import ChannelStatistic, QuantizationReport, record_linear_inputs
from llmlab.quant.mappings import balance_pairs, decoder_layers, mapping_for
from llmlab.quant.w8a8 import method_name_w8a8, quantize_model_w8a8

MIN_SCALE = 1e-5  # floor for max|X_j|, max|W_j| and s_j (the reference's clamp): a dead channel must not divide by 0


# ---------------------------------------------------------------- the algorithm (pure tensor functions)


def weight_channel_max(W_list: list[torch.Tensor]) -> torch.Tensor:
    """max|W_j| over every output row of every consumer: [out_i, in] weights -> [in]."""
    return torch.cat([W.abs().float() for W in W_list]).amax(dim=0)  # [Σ out_i, in] -> [in]


def smooth_scales(act_scales: torch.Tensor, W_max: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1−α) (Eq. 4), from act_scales = max|X_j| [in] and W_max = max|W_j| [in]."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"migration strength alpha={alpha} must lie in [0, 1]; the paper uses 0.5 (0.75-0.85 for "
                         "models with larger outliers)")
    s = act_scales.float().clamp(min=MIN_SCALE).pow(alpha) / W_max.float().clamp(min=MIN_SCALE).pow(1 - alpha)
    return s.clamp(min=MIN_SCALE)


@torch.no_grad()
def fold_scales(producer: torch.nn.Module, consumers: list[torch.nn.Linear], s: torch.Tensor) -> None:
    """Divide the producer's output channel j by s_j and multiply the consumers' input column j by s_j, in place.

    The producer is a norm (weight [in], optional bias [in]) or a Linear (weight [in, ·]: row j makes output j). The
    composed function is unchanged in exact arithmetic. Shared by SmoothQuant and AWQ (llm-awq `scale_ln_fcs`,
    `scale_fc_fc`).
    """
    s = s.to(producer.weight.device)
    if producer.weight.dim() == 1:  # norm: y_j = x̂_j · weight_j (+ bias_j)
        producer.weight.div_(s.to(producer.weight.dtype))
    else:  # Linear [out, in]: output channel j is row j
        producer.weight.div_(s.to(producer.weight.dtype)[:, None])  # [out] -> [out, 1]
    if getattr(producer, "bias", None) is not None:
        producer.bias.div_(s.to(producer.bias.dtype))
    for linear in consumers:
        linear.weight.mul_(s.to(linear.weight.dtype)[None, :])  # [in] -> [1, in]: scales columns


# ---------------------------------------------------------------- statistics over a model (the outlier story)


@torch.no_grad()
def activation_scales(model, calibration_ids: torch.Tensor, batch_size: int = 8,
                      progress: bool = False) -> dict[str, ChannelStatistic]:
    """Per-input-channel statistics (max |X_j|, mean |X_j|) of every decoder linear that starts a group sharing one
    input (q_proj for q, k, v; o_proj; gate_proj for gate, up; down_proj), keyed by full module name.

    One forward of the float model over `calibration_ids` [n_samples, seq_len] with hooks on those linears
    (mit-han-lab/smoothquant `get_act_scales`). `stat.abs_max` [in] is SmoothQuant's act_scales; plotted per layer it
    shows the outlier channels (`outlier_ratio`).
    """
    from tqdm.auto import tqdm

    mapping = mapping_for(model)
    linears = {f"{mapping.layers}.{index}.{group[0]}": layer.get_submodule(group[0])
               for index, layer in enumerate(decoder_layers(model, mapping)) for group in mapping.sequential}
    stats = {name: ChannelStatistic(linear.in_features, device=linear.weight.device)
             for name, linear in linears.items()}
    device = next(model.parameters()).device
    with record_linear_inputs(linears, lambda name, X: stats[name].add(X)):
        for batch in tqdm(calibration_ids.split(batch_size), desc="activation scales", disable=not progress):
            model(batch.to(device), use_cache=False)  # [batch_size, seq_len]
    return stats


def outlier_ratio(abs_max: torch.Tensor) -> float:
    """max_j max|X_j| / median_j max|X_j|: how far the largest channel sits above a typical one (1 = no outlier)."""
    return (abs_max.max() / abs_max.median().clamp(min=MIN_SCALE)).item()


# ---------------------------------------------------------------- over a model


def norm_pairs(layer: torch.nn.Module, mapping) -> list[tuple[str, tuple[str, ...]]]:
    """The balance pairs of `layer` whose producer is a norm (a 1-D weight): the pairs SmoothQuant smooths."""
    return [(producer, consumers) for producer, consumers in balance_pairs(layer, mapping)
            if layer.get_submodule(producer).weight.dim() == 1]


@torch.no_grad()
def smooth_model(model, act_scales: dict[str, ChannelStatistic | torch.Tensor], alpha: float = 0.5) -> list[str]:
    """Fold SmoothQuant scales into every norm → linears pair of `model`, in place; return the producers smoothed.

    `act_scales` maps a consumer's full name to its max|X_j| [in] (a tensor, or a ChannelStatistic from
    `activation_scales`) measured on the *unsmoothed* model.
    """
    mapping = mapping_for(model)
    smoothed = []
    for index, layer in enumerate(decoder_layers(model, mapping)):
        for producer, consumers in norm_pairs(layer, mapping):
            key = f"{mapping.layers}.{index}.{consumers[0]}"
            if key not in act_scales:
                raise LookupError(f"no activation scales for {key}; compute them with activation_scales(model, "
                                  "calibration_ids) on this model before smoothing it")
            stat = act_scales[key]
            X_max = stat.abs_max if isinstance(stat, ChannelStatistic) else stat  # [in]
            linears = [layer.get_submodule(name) for name in consumers]
            s = smooth_scales(X_max, weight_channel_max([linear.weight for linear in linears]), alpha)
            fold_scales(layer.get_submodule(producer), linears, s)
            smoothed.append(f"{mapping.layers}.{index}.{producer}")
    return smoothed


def smoothquant_quantize_model(model, calibration_ids: torch.Tensor | None = None, alpha: float = 0.5,
                               act_scales: dict | None = None, activations: str = "per-token", fmt: str = "int8",
                               batch_size: int = 8, progress: bool = False) -> QuantizationReport:
    """Smooth `model` with migration strength `alpha`, then make every decoder linear W8A8, in place.

    Pass `calibration_ids` [n_samples, seq_len], or `act_scales` already measured on this (unsmoothed) model — an α
    sweep measures them once. The report's seconds include calibration when it happens here.
    """
    if act_scales is None and calibration_ids is None:
        raise ValueError("SmoothQuant needs activation scales: pass calibration_ids (e.g. calibration_batches("
                         "tokenizer, 32, 512)) or act_scales from activation_scales(model, calibration_ids)")
    method_name_w8a8(activations, fmt)  # refuses unknown settings before the model is touched
    method = "smoothquant-" + ("w8a8" if fmt == "int8" else "fp8-w8a8") + ("" if activations == "per-token"
                                                                           else "-per-tensor")
    start = time.perf_counter()
    if act_scales is None:
        act_scales = activation_scales(model, calibration_ids, batch_size, progress)
    smooth_model(model, act_scales, alpha)
    report = quantize_model_w8a8(model, activations, fmt, method=method)
    report.seconds = time.perf_counter() - start
    return report


def alpha_sweep(model, calibration_ids: torch.Tensor, evaluation_ids: torch.Tensor,
                alphas=(0.0, 0.25, 0.5, 0.75, 1.0), seq_len: int = 512, batch_size: int = 8) -> dict[float, float]:
    """Perplexity of SmoothQuant W8A8 (per-token) for each migration strength α: {α: ppl}. `model` is not modified
    (each α runs on a deep copy); activation scales are measured once."""
    import copy

    from llmlab.evaluate import perplexity

    act_scales = activation_scales(model, calibration_ids, batch_size)
    result = {}
    for alpha in alphas:
        smoothed = copy.deepcopy(model)
        smoothquant_quantize_model(smoothed, alpha=alpha, act_scales=act_scales)
        result[alpha] = perplexity(smoothed, evaluation_ids, seq_len)
        del smoothed
    return result
