"""AWQ: protect the weights that meet large activations by scaling them up before 4-bit rounding.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han, "AWQ: Activation-aware Weight Quantization for LLM
Compression and Acceleration", arXiv 2306.00978 (MLSys 2024). Mirrors mit-han-lab/llm-awq `awq/quantize/auto_scale.py`
(`auto_scale_block`, `apply_scale`) and `auto_clip.py` (`auto_clip_layer`).

§3.1: a few input channels of a linear layer are *salient* — their activations are large, so rounding errors in their
weight columns cost the most. §3.2: multiplying input column j of W by s_j > 1 and dividing the input X_j by s_j
leaves W X unchanged, but the column's rounding error relative to its size shrinks (the group's scale barely moves
when one column grows). The per-channel scale comes from the mean activation magnitude with one exponent α (Eq. 5):

    s = s_X^α,   s_X = mean|X_j| over calibration tokens,  α* = argmin_α ‖Q(W·diag(s)) (diag(s)⁻¹ X) − W X‖

searched over a grid α ∈ {0, 1/n, …, 1} (α = 0: plain RTN), the error measured on the output of the block the
linears sit in (attention for q, k, v; the MLP for gate, up; the linear itself otherwise), with s normalized by
√(max s · min s) as the reference does. diag(s)⁻¹ is folded into the producer of X (the norm weight before q, k, v
and gate, up; v before o; up before down), diag(s) into the consumers' weight columns, exactly as for SmoothQuant
(`llmlab.quant.smoothquant.fold_scales`). Then, optionally (the reference's `auto_clip`), each group's range is
shrunk to the max |w| that minimizes that group's output error, and the scaled weights are rounded to nearest,
group-wise (`llmlab.quant.rtn`). No weight is updated by gradients or error feedback — unlike GPTQ.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llmlab.quant.driver import QuantizationReport, check_model_group_size, method_name, run_layer, walk_layers
from llmlab.quant.formats import check_group_size, grid_params, snap_to_grid
from llmlab.quant.mappings import balance_pairs, decoder_layers, mapping_for
from llmlab.quant.rtn import rtn
from llmlab.quant.smoothquant import fold_scales

MIN_SCALE = 1e-4  # floor for s before normalization (the reference's clamp): a dead channel keeps a finite scale


@dataclass
class AWQConfig:
    """AWQ settings (defaults: the reference's, except the grid, which here includes α = 1, and symmetric grids)."""

    bits: int = 4  # integer bits per weight (2 to 8)
    group_size: int | None = 64  # consecutive input columns sharing one grid; None: one grid per output row
    symmetric: bool = True  # signed grid, zero point 0 (W4A16 in llm-compressor, our RTN); llm-awq uses zero points
    n_grid: int = 20  # α searched over {0, 1/n_grid, …, 1}
    clip: bool = True  # search a clipping range per group after scaling (llm-awq `auto_clip`; llm-compressor skips it)
    clip_grid: int = 20  # clipping tries max |w| · (1 − i/clip_grid) for i = 0, 1, …
    max_shrink: float = 0.5  # … down to max |w| · (1 − max_shrink)
    clip_tokens: int = 512  # calibration tokens (evenly spaced) used by the clipping search
    clip_skip: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj")  # q·kᵀ follows: per-linear error misleads
    propagate: str = "float"  # next layer calibrates on the float outputs (llm-awq, llm-compressor) or "quantized"


@dataclass
class AWQReport(QuantizationReport):
    """A QuantizationReport with the scale search's results per balance pair (keyed by the producer's full name)."""

    alphas: dict[str, float] = field(default_factory=dict)  # producer name -> the α kept
    curves: dict[str, list[float]] = field(default_factory=dict)  # producer name -> block output MSE for each α


# ---------------------------------------------------------------- the algorithm (pure tensor functions)


def quantize_groups(W: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True) -> torch.Tensor:
    """Ŵ: W [out, in] rounded to nearest on one grid per `group_size` columns of a row, in float32: the values of
    `llmlab.quant.rtn.rtn`, on a grouped view without integer codes (the search calls it 20+ times per pair)."""
    out_features, in_features = W.shape
    check_group_size(in_features, group_size, bits)
    Wg = W.float().reshape(out_features, -1, group_size or in_features)  # [out, in] -> [out, n_groups, g]
    s, z = grid_params(Wg, bits, symmetric)  # [out, n_groups, 1] each
    return snap_to_grid(Wg, s, z, bits, symmetric).reshape(out_features, in_features)  # -> [out, in]


def awq_scales(x_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = s_X^α (Eq. 5) from s_X = mean|X_j| [in], normalized so that max s · min s = 1 (the reference's choice)."""
    s = x_mean.float().pow(alpha).clamp(min=MIN_SCALE)
    return s / (s.max() * s.min()).sqrt()


def awq_search_scale(X: torch.Tensor, W_list: list[torch.Tensor], forward: Callable[[list[torch.Tensor]], torch.Tensor],
                     bits: int = 4, group_size: int | None = 64, grid: int = 20,
                     symmetric: bool = True) -> tuple[torch.Tensor, list[float]]:
    """(s, losses): the per-input-channel scale s [in] with the smallest block output error, and that error for every
    α = k / grid, k = 0 … grid (the curve the notebook plots).

    X [..., in] are the consumers' calibration inputs (only mean |X_j| is used); W_list their weights [out_i, in];
    `forward(weights)` runs the block on the calibration inputs with the consumers' weights replaced by `weights`
    and returns its output. The error is mean((forward(Q(W · s) / s) − forward(W))²) (§3.2).
    """
    for W in W_list:
        check_group_size(W.shape[1], group_size, bits)
    x_mean = X.reshape(-1, X.shape[-1]).abs().float().mean(dim=0)  # [..., in] -> [N, in] -> [in]
    Y = forward(W_list)  # float output of the block
    losses, best = [], None
    for k in range(grid + 1):
        s = awq_scales(x_mean, k / grid)  # [in]
        W_hat = [(quantize_groups(W.float() * s, bits, group_size, symmetric) / s).to(W.dtype) for W in W_list]
        loss = (forward(W_hat).float() - Y.float()).pow(2).mean().item()
        losses.append(loss)
        if best is None or loss < losses[best]:
            best = k
    return awq_scales(x_mean, best / grid), losses


def awq_clip(W: torch.Tensor, X: torch.Tensor, bits: int = 4, group_size: int | None = 64, grid: int = 20,
             max_shrink: float = 0.5, symmetric: bool = True, n_tokens: int = 512) -> torch.Tensor:
    """W [out, in] with each group of `group_size` weights of a row clipped to ±m, m the shrunk max |w| (over
    m = max|w| · (1 − i/grid), i < max_shrink · grid) that minimizes the group's output error
    mean_t (X_t,g · (Q(w_g) − w_g))² on calibration inputs X [..., in] (llm-awq `auto_clip_layer`).

    i = 0 (no clipping) is on the grid, so no group's error grows. Done per group of the output sum, not on the whole
    output: the total error of a row can still move either way, though it rarely grows.
    """
    out_features, in_features = W.shape
    check_group_size(in_features, group_size, bits)
    g = group_size or in_features
    X = X.reshape(-1, in_features).float()  # [..., in] -> [N, in]
    X = X[:: max(1, X.shape[0] // n_tokens)]  # evenly spaced tokens: [≈n_tokens, in]
    Xg = X.view(X.shape[0], in_features // g, g)  # [T, in] -> [T, n_groups, g]
    Wg = W.float().view(out_features, in_features // g, g)  # [out, in] -> [out, n_groups, g]
    Y = torch.einsum("ogk,tgk->ogt", Wg, Xg)  # each group's share of the output: [out, n_groups, T]
    max_val = Wg.abs().amax(dim=-1, keepdim=True)  # [out, n_groups, 1]
    best_max, best_err = max_val.clone(), torch.full_like(max_val, float("inf"))
    for i in range(int(max_shrink * grid)):
        m = max_val * (1 - i / grid)
        Q = quantize_groups(Wg.clamp(-m, m).reshape(out_features, in_features), bits, group_size, symmetric)
        Y_hat = torch.einsum("ogk,tgk->ogt", Q.view_as(Wg), Xg)  # [out, n_groups, T]
        err = (Y_hat - Y).pow(2).mean(dim=-1, keepdim=True)  # [out, n_groups, 1]
        better = err < best_err
        best_err, best_max = torch.where(better, err, best_err), torch.where(better, m, best_max)
    W_clipped = Wg.clamp(-best_max, best_max)  # [out, n_groups, g]
    return W_clipped.reshape(out_features, in_features).to(W.dtype)  # [out, n_groups, g] -> [out, in]


# ---------------------------------------------------------------- plumbing


def inspected_module(consumers: tuple[str, ...]) -> str:
    """The module whose output AWQ compares for a pair: the consumers' lowest common ancestor ('self_attn' for q, k, v;
    'mlp' for gate, up), or the consumer itself when it is alone ('' would be the whole decoder layer)."""
    if len(consumers) == 1:
        return consumers[0]
    parts = [name.split(".") for name in consumers]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


@contextlib.contextmanager
def _record_module_inputs(layer: torch.nn.Module, names, record: Callable[[str, tuple, dict], None]):
    """While open, each call of `layer.get_submodule(name)` calls `record(name, args, kwargs)`."""
    handles = [layer.get_submodule(name).register_forward_pre_hook(
        lambda module, args, kwargs, name=name: record(name, args, kwargs), with_kwargs=True) for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _weights_replaced(linears: list[torch.nn.Linear], weights: list[torch.Tensor]):
    """Run the block with the linears' weights temporarily replaced."""
    originals = [linear.weight.data for linear in linears]
    try:
        for linear, W in zip(linears, weights):
            linear.weight.data = W
        yield
    finally:
        for linear, W in zip(linears, originals):
            linear.weight.data = W


def _block_forward(module: torch.nn.Module, calls: list[tuple[tuple, dict]], linears: list[torch.nn.Linear]):
    """forward(weights) -> the module's outputs on its recorded calls, [tokens, features], with `linears` swapped."""

    @torch.no_grad()
    def forward(weights: list[torch.Tensor]) -> torch.Tensor:
        with _weights_replaced(linears, weights):
            outs = [module(*args, **kwargs) for args, kwargs in calls]
        outs = [out[0] if isinstance(out, tuple) else out for out in outs]  # attention returns (output, weights)
        return torch.cat([out.reshape(-1, out.shape[-1]) for out in outs])  # [batch, seq, d] -> [tokens, d]

    return forward


def awq_quantize_model(model, calibration_ids: torch.Tensor, config: AWQConfig | None = None, batch_size: int = 8,
                       progress: bool = True) -> AWQReport:
    """Quantize every decoder-layer linear of `model` with AWQ, in place, layer after layer (see the module docstring).

    Per layer: one float run records each linear's inputs and each inspected block's calls; each balance pair gets
    its scale search and fold; then clipping (optional) and group-wise RTN of every linear. The next layer calibrates
    on this layer's float outputs, as the reference and llm-compressor do (`config.propagate`, `walk_layers`).
    """
    config = config or AWQConfig()
    mapping = mapping_for(model)
    check_model_group_size(model, config.bits, config.group_size, mapping)
    start = time.perf_counter()
    name = method_name("awq", config.bits, config.group_size)
    report = AWQReport(name, config.bits, config.group_size)
    shares_input = {member: group[0] for group in mapping.sequential for member in group}  # linear -> group's first
    for index, layer, inputs in walk_layers(model, calibration_ids, batch_size, progress, name, config.propagate):
        prefix = f"{mapping.layers}.{index}."
        pairs = balance_pairs(layer, mapping)
        blocks = {inspected_module(consumers) for _, consumers in pairs}
        calls: dict[str, list] = {block: [] for block in blocks}
        seen: dict[str, list] = {first: [] for first in set(shares_input.values())}

        def record(module_name, args, kwargs):
            if module_name in calls:
                calls[module_name].append((args, dict(kwargs)))
            if module_name in seen:
                seen[module_name].append((args[0] if args else kwargs["input"]).detach())

        with _record_module_inputs(layer, sorted(blocks | set(seen)), record):
            run_layer(layer, inputs)
        X = {first: torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]) for first, xs in seen.items()}  # [tokens, in]
        input_scale = {}  # linear -> s its input was divided by (for clipping on the inputs it will really see)
        for producer, consumers in pairs:
            linears = [layer.get_submodule(consumer) for consumer in consumers]
            forward = _block_forward(layer.get_submodule(inspected_module(consumers)),
                                     calls[inspected_module(consumers)], linears)
            s, losses = awq_search_scale(X[shares_input[consumers[0]]], [lin.weight.data for lin in linears], forward,
                                         config.bits, config.group_size, config.n_grid, config.symmetric)
            fold_scales(layer.get_submodule(producer), linears, s)
            input_scale.update({consumer: s for consumer in consumers})
            report.curves[prefix + producer] = losses
            report.alphas[prefix + producer] = losses.index(min(losses)) / config.n_grid
            report.losses[prefix + producer] = min(losses)
        with torch.no_grad():
            for member, first in shares_input.items():
                linear = layer.get_submodule(member)
                if config.clip and member not in config.clip_skip:
                    X_member = X[first] / input_scale[member] if member in input_scale else X[first]  # [tokens, in]
                    linear.weight.copy_(awq_clip(linear.weight, X_member, config.bits, config.group_size,
                                                 config.clip_grid, config.max_shrink, config.symmetric,
                                                 config.clip_tokens))
                linear.weight.copy_(rtn(linear.weight, config.bits, config.group_size, config.symmetric))
                report.quantized.append(prefix + member)
        del calls, seen, X
    report.seconds = time.perf_counter() - start
    return report


# ---------------------------------------------------------------- what AWQ sees (chapter 06)

SELECTIONS = ("activation", "weight", "random")  # how `keep_channels_quantize_model` picks the channels it keeps


def salient_channels(x_mean: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """The ⌈fraction · in⌉ input channels with the largest mean |X_j| (§3.1: 'salient'), largest first: [k] indices."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must lie in (0, 1]; the paper keeps 0.1 %, 1 % or 3 % of channels")
    k = math.ceil(fraction * x_mean.numel())
    return x_mean.float().topk(k).indices


def rtn_keep_channels(W: torch.Tensor, keep: torch.Tensor, bits: int = 4, group_size: int | None = 64,
                      symmetric: bool = True) -> torch.Tensor:
    """Ŵ: W [out, in] rounded to nearest group-wise except the input columns `keep`, left as they are (16-bit): the
    mixed-precision format of the paper's motivating experiment (§3.1, Table 1) — not what AWQ ships. The kept columns
    are zeroed before the grids are chosen, so they do not widen their groups' ranges."""
    W_rest = W.clone()
    W_rest[:, keep] = 0
    W_hat = rtn(W_rest, bits, group_size, symmetric)  # [out, in]
    W_hat[:, keep] = W[:, keep]
    return W_hat


def _kept_channels(selection: str, x_mean: torch.Tensor, W: torch.Tensor, fraction: float,
                   generator: torch.Generator) -> torch.Tensor:
    """The input channels of W [out, in] kept in 16-bit under `selection` (see SELECTIONS)."""
    if selection == "activation":
        return salient_channels(x_mean, fraction)
    k = math.ceil(fraction * W.shape[1])
    if selection == "weight":
        return W.float().norm(dim=0).topk(k).indices  # the largest columns ‖W_:,j‖
    return torch.randperm(W.shape[1], generator=generator)[:k]


@torch.no_grad()
def keep_channels_quantize_model(model, act_stats: dict, fraction: float = 0.01, selection: str = "activation",
                                 bits: int = 4, group_size: int | None = 64, symmetric: bool = True,
                                 seed: int = 0) -> QuantizationReport:
    """RTN every decoder linear of `model` in place, keeping a `fraction` of its input channels in 16-bit, chosen by
    mean |X_j| ('activation'), by column norm ‖W_:,j‖ ('weight') or at random ('random', seeded): AWQ's Table 1.

    `act_stats` maps the first linear of each group sharing an input to its ChannelStatistic
    (`llmlab.quant.smoothquant.activation_scales(model, calibration_ids)`, measured on the float model); the linears
    of one group share their activation-selected channels.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r}: choose one of {', '.join(SELECTIONS)}")
    mapping = mapping_for(model)
    check_model_group_size(model, bits, group_size, mapping)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    report = QuantizationReport(f"{method_name('rtn', bits, group_size)}-keep{fraction:.1%}-{selection}", bits,
                                group_size)
    for index, layer in enumerate(decoder_layers(model, mapping)):
        for group in mapping.sequential:
            key = f"{mapping.layers}.{index}.{group[0]}"
            if key not in act_stats:
                raise LookupError(f"no activation statistics for {key}; compute them with activation_scales(model, "
                                  "calibration_ids) on this model first")
            for member in group:
                linear = layer.get_submodule(member)
                keep = _kept_channels(selection, act_stats[key].abs_mean, linear.weight, fraction, generator)
                linear.weight.copy_(rtn_keep_channels(linear.weight, keep, bits, group_size, symmetric))
                report.quantized.append(f"{mapping.layers}.{index}.{member}")
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class PairInputs:
    """What the scale search needs for one balance pair of one decoder layer, recorded on the float model."""

    producer: str  # the norm or linear whose output the consumers read, e.g. "input_layernorm"
    consumers: tuple[str, ...]  # e.g. ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    block: str  # the module whose output the search compares: "self_attn", "mlp", or the consumer itself
    X: torch.Tensor  # [tokens, in] the consumers' calibration inputs
    weights: list[torch.Tensor]  # the consumers' float weights [out_i, in] (copies)
    forward: Callable[[list[torch.Tensor]], torch.Tensor]  # weights -> the block's output [tokens, d]; it runs the
    # model's own modules, so keep the model unchanged while you call it


@torch.no_grad()
def balance_pair_inputs(model, calibration_ids: torch.Tensor, layer_index: int,
                        batch_size: int = 8) -> list[PairInputs]:
    """One float forward over `calibration_ids` [n_samples, seq_len] records, for each balance pair of decoder layer
    `layer_index`, the consumers' inputs and the calls of the block the search compares (as `awq_quantize_model`
    does layer by layer, but on the unquantized model)."""
    mapping = mapping_for(model)
    layers = decoder_layers(model, mapping)
    if not 0 <= layer_index < len(layers):
        raise ValueError(f"layer_index={layer_index}: this model has decoder layers 0 to {len(layers) - 1}")
    layer = layers[layer_index]
    pairs = balance_pairs(layer, mapping)
    blocks = {inspected_module(consumers) for _, consumers in pairs}
    calls: dict[str, list] = {block: [] for block in blocks}
    seen: dict[str, list] = {consumers[0]: [] for _, consumers in pairs}

    def record(module_name, args, kwargs):
        if module_name in calls:
            calls[module_name].append((args, dict(kwargs)))
        if module_name in seen:
            seen[module_name].append((args[0] if args else kwargs["input"]).detach())

    device = next(model.parameters()).device
    with _record_module_inputs(layer, sorted(blocks | set(seen)), record):
        for batch in calibration_ids.split(batch_size):
            model(batch.to(device), use_cache=False)  # [batch_size, seq_len]
    result = []
    for producer, consumers in pairs:
        linears = [layer.get_submodule(consumer) for consumer in consumers]
        block = inspected_module(consumers)
        X = torch.cat([x.reshape(-1, x.shape[-1]) for x in seen[consumers[0]]])  # [batch, seq, in] -> [tokens, in]
        result.append(PairInputs(producer, consumers, block, X, [linear.weight.detach().clone() for linear in linears],
                                 _block_forward(layer.get_submodule(block), calls[block], linears)))
    return result


def layer_scale_curves(model, calibration_ids: torch.Tensor, layer_index: int, bits: int = 4,
                       group_size: int | None = 64, grid: int = 20, symmetric: bool = True) -> dict[str, list[float]]:
    """The scale search's curve for every balance pair of one layer of the float model: {producer: [block output MSE
    for α = 0, 1/grid, …, 1]} (index 0 is plain RTN). `awq_quantize_model`'s report keeps the same curves for every
    layer, measured on inputs that already carry the earlier layers' quantization."""
    return {pair.producer: awq_search_scale(pair.X, pair.weights, pair.forward, bits, group_size, grid, symmetric)[1]
            for pair in balance_pair_inputs(model, calibration_ids, layer_index)}
