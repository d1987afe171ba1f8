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
from dataclasses import dataclass

import torch

from llmlab.quant.driver import ChannelStatistic, QuantizationReport, record_linear_inputs
from llmlab.quant.mappings import balance_pairs, decoder_layers, mapping_for
from llmlab.quant.w8a8 import method_name_w8a8, quantize_activation, quantize_model_w8a8, quantize_weight

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
        smoothed += smooth_layer(layer, f"{mapping.layers}.{index}.", mapping, act_scales, alpha)
    return smoothed


@torch.no_grad()
def smooth_layer(layer: torch.nn.Module, prefix: str, mapping, act_scales: dict, alpha: float = 0.5) -> list[str]:
    """`smooth_model` for one decoder layer whose modules are named `prefix` + local name in `act_scales`."""
    smoothed = []
    for producer, consumers, s in layer_smoothing_scales(layer, prefix, mapping, act_scales, alpha):
        fold_scales(layer.get_submodule(producer), [layer.get_submodule(name) for name in consumers], s)
        smoothed.append(prefix + producer)
    return smoothed


def layer_smoothing_scales(layer: torch.nn.Module, prefix: str, mapping, act_scales: dict,
                           alpha: float = 0.5) -> list[tuple[str, tuple[str, ...], torch.Tensor]]:
    """[(producer, consumers, s)] for the norm → linears pairs of one decoder layer: s [in] from Eq. 4."""
    result = []
    for producer, consumers in norm_pairs(layer, mapping):
        key = f"{prefix}{consumers[0]}"
        if key not in act_scales:
            raise LookupError(f"no activation scales for {key}; compute them with activation_scales(model, "
                              "calibration_ids) on this model before smoothing it")
        stat = act_scales[key]
        X_max = stat.abs_max if isinstance(stat, ChannelStatistic) else stat  # [in]
        W_max = weight_channel_max([layer.get_submodule(name).weight for name in consumers])  # [in]
        result.append((producer, consumers, smooth_scales(X_max, W_max, alpha)))
    return result


def method_name_smoothquant(activations: str = "per-token", fmt: str = "int8") -> str:
    """'smoothquant-w8a8', 'smoothquant-fp8-w8a8', '…-per-tensor' for per-tensor activations."""
    method_name_w8a8(activations, fmt)  # refuses unknown settings
    return ("smoothquant-" + ("w8a8" if fmt == "int8" else "fp8-w8a8")
            + ("" if activations == "per-token" else "-per-tensor"))


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
    method = method_name_smoothquant(activations, fmt)  # refuses unknown settings before the model is touched
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
    (each α runs on a copy, `w8a8_copy`); activation scales are measured once."""
    from llmlab.evaluate import perplexity

    act_scales = activation_scales(model, calibration_ids, batch_size)
    result = {}
    for alpha in alphas:
        smoothed, _ = w8a8_copy(model, alpha, act_scales)
        result[alpha] = perplexity(smoothed, evaluation_ids, seq_len)
        del smoothed
    return result


@torch.no_grad()
def w8a8_copy(model, alpha: float | None = None, act_scales: dict | None = None, activations: str = "per-token",
              fmt: str = "int8") -> tuple[torch.nn.Module, QuantizationReport]:
    """(copy, report): a W8A8 copy of `model`, smoothed with migration strength `alpha` first when it is given
    (`act_scales` from `activation_scales(model, …)`); `model` is not modified.

    The same model as deepcopy + `quantize_model_w8a8` / `smoothquant_quantize_model` (tested), in less memory: the
    copy shares `model`'s parameters; each linear is replaced by a W8A8 one built from its weight (times the
    smoothing factors s, in a temporary), and only the norms that smoothing divides get private copies. On the
    embedded model it adds the W8A8 weights (0.43 GB of float32 fake-quant values), where deepcopy + quantize peaks
    near 1 GB more and leaves the allocator's heap fragmented.
    """
    import copy

    from llmlab.quant.mappings import layer_linears

    if alpha is not None and act_scales is None:
        raise ValueError("smoothing needs act_scales: pass activation_scales(model, calibration_ids)")
    method = method_name_w8a8(activations, fmt) if alpha is None else method_name_smoothquant(activations, fmt)
    start = time.perf_counter()
    duplicate = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})  # memo objects stay shared
    mapping = mapping_for(duplicate)
    report = QuantizationReport(method, 8, None)
    for index, layer in enumerate(decoder_layers(duplicate, mapping)):
        prefix = f"{mapping.layers}.{index}."
        column_scales = {}  # consumer -> s its weight columns are multiplied by before quantization
        if alpha is not None:
            for producer, consumers, s in layer_smoothing_scales(layer, prefix, mapping, act_scales, alpha):
                norm = layer.get_submodule(producer)
                for key, parameter in norm.named_parameters(recurse=False):  # a private copy of the norm
                    setattr(norm, key, torch.nn.Parameter(parameter.detach().clone(), parameter.requires_grad))
                fold_scales(norm, [], s)  # the norm's half of the fold; the weights' half happens below
                column_scales.update(dict.fromkeys(consumers, s))
        for name, linear in layer_linears(layer, mapping).items():
            parent, _, child = name.rpartition(".")
            quantized = _w8a8_linear(linear, activations, fmt, column_scales.get(name))
            setattr(layer.get_submodule(parent), child, quantized)
            report.quantized.append(prefix + name)
    report.seconds = time.perf_counter() - start
    return duplicate, report


def _w8a8_linear(linear: torch.nn.Linear, activations: str, fmt: str, s: torch.Tensor | None = None):
    """`W8A8Linear.from_linear` of `linear` with its weight columns multiplied by `s` first (None: unchanged), built
    without a weight to initialize and overwrite, and without touching `linear` (its weight may be shared)."""
    from llmlab.quant.w8a8 import W8A8Linear

    module = W8A8Linear(linear.in_features, linear.out_features, linear.bias is not None, activations, fmt,
                        device="meta", dtype=linear.weight.dtype)
    W = linear.weight.detach() if s is None else linear.weight.detach() * s.to(linear.weight.dtype)[None, :]
    module.weight = torch.nn.Parameter(quantize_weight(W, fmt), linear.weight.requires_grad)
    if linear.bias is not None:
        module.bias = torch.nn.Parameter(linear.bias.detach().clone(), linear.bias.requires_grad)
    return module


# ---------------------------------------------------------------- what SmoothQuant sees, on one layer (chapter 05)


def outlier_channels(abs_max: torch.Tensor, k: int = 3) -> list[tuple[int, float]]:
    """The `k` channels with the largest max|X_j| and how many times the median channel's max each one is:
    [(channel j, max|X_j| / median_j max|X_j|), …], largest first."""
    top = abs_max.float().topk(min(k, abs_max.numel()))
    median = abs_max.float().median().clamp(min=MIN_SCALE)
    return [(int(j), (value / median).item()) for value, j in zip(top.values, top.indices)]


@torch.no_grad()
def linear_inputs(model, calibration_ids: torch.Tensor, names, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """The inputs X [tokens, in] that the linears `names` (full module names) receive when the float model runs on
    `calibration_ids` [n_samples, seq_len]: what one-layer demonstrations work on. Keep `names` few: each X is
    tokens × in_features floats."""
    linears = {name: model.get_submodule(name) for name in names}
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    device = next(model.parameters()).device
    with record_linear_inputs(linears, lambda name, X: seen[name].append(X.reshape(-1, X.shape[-1]))):
        for batch in calibration_ids.split(batch_size):
            model(batch.to(device), use_cache=False)  # [batch_size, seq_len]
    return {name: torch.cat(xs) for name, xs in seen.items()}  # [batch, seq, in] pieces -> [tokens, in]


@dataclass
class SmoothingRanges:
    """Per-input-channel ranges of one smoothed group of linears, before and after folding s (the paper's Figure 4)."""

    alpha: float  # migration strength used
    s: torch.Tensor  # [in] smoothing factors s_j (Eq. 4)
    act_before: torch.Tensor  # [in] max|X_j|
    weight_before: torch.Tensor  # [in] max|W_j| over every consumer's rows
    act_after: torch.Tensor  # [in] max|X_j / s_j|
    weight_after: torch.Tensor  # [in] max|W_j · s_j|

    def spread(self) -> dict[str, float]:
        """max over channels / median over channels, for each of the four ranges: how hard each tensor is to
        quantize with one scale across its channels (1 = flat)."""
        return {name: outlier_ratio(getattr(self, name))
                for name in ("act_before", "weight_before", "act_after", "weight_after")}


def smoothing_ranges(act_scales: torch.Tensor, W_list: list[torch.Tensor], alpha: float = 0.5) -> SmoothingRanges:
    """The ranges of X and W per input channel before and after smoothing with migration strength `alpha`, from
    act_scales = max|X_j| [in] and the consumers' weights [out_i, in]."""
    W_max = weight_channel_max(W_list)  # [in]
    s = smooth_scales(act_scales, W_max, alpha)  # [in]
    return SmoothingRanges(alpha, s, act_scales.float(), W_max, act_scales.float() / s, W_max * s)


def w8a8_output_error(X: torch.Tensor, W: torch.Tensor, s: torch.Tensor | None = None,
                      activations: str | None = "per-token", weights: bool = True, fmt: str = "int8") -> float:
    """How far a W8A8 linear's output lands from the float one: mean over tokens t of ‖ŷ_t − y_t‖ / ‖y_t‖, with
    y = X Wᵀ and ŷ = Q(X / s) Q(W · s)ᵀ (SmoothQuant's Eq. 3; s=None: no smoothing).

    X [tokens, in], W [out, in]. `activations`: "per-token", "per-tensor", or None to keep them in float;
    `weights`: False keeps them in float. Switching one off shows which side the error comes from. Every token
    counts the same, so a few tokens with huge activations (the first one, often) do not hide the others.
    """
    X, W = X.reshape(-1, X.shape[-1]).float(), W.float()  # [..., in] -> [tokens, in]
    Y = X @ W.T  # [tokens, out]
    if s is not None:
        X, W = X / s, W * s  # diag(s)⁻¹ on X's channels, diag(s) on W's input columns
    X_hat = X if activations is None else quantize_activation(X, activations, fmt)
    W_hat = quantize_weight(W, fmt) if weights else W
    Y_hat = X_hat @ W_hat.T  # [tokens, out]
    return ((Y_hat - Y).norm(dim=-1) / Y.norm(dim=-1).clamp(min=1e-12)).mean().item()


@torch.no_grad()
def activation_errors(model, calibration_ids: torch.Tensor, batch_size: int = 1, fmt: str = "int8",
                      granularities=("per-tensor", "per-token")) -> dict[str, dict[str, float]]:
    """For every decoder linear that starts a group sharing one input (as `activation_scales`), the output error of
    quantizing only its activations at each granularity: {name: {granularity: w8a8_output_error(..., weights=False)}},
    averaged over the calibration batches. `batch_size=1` gives each per-tensor scale one sequence, as when
    perplexity scores one window at a time."""
    mapping = mapping_for(model)
    linears = {f"{mapping.layers}.{index}.{group[0]}": layer.get_submodule(group[0])
               for index, layer in enumerate(decoder_layers(model, mapping)) for group in mapping.sequential}
    sums = {name: dict.fromkeys(granularities, 0.0) for name in linears}
    batches = calibration_ids.split(batch_size)

    def record(name, X):
        for granularity in granularities:
            sums[name][granularity] += w8a8_output_error(X, linears[name].weight, None, granularity, False, fmt)

    device = next(model.parameters()).device
    with record_linear_inputs(linears, record):
        for batch in batches:
            model(batch.to(device), use_cache=False)  # [batch_size, seq_len]
    return {name: {granularity: total / len(batches) for granularity, total in errors.items()}
            for name, errors in sums.items()}
