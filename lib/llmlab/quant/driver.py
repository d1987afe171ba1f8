"""Walk a model's decoder layers the way GPTQ does, and apply a weight quantizer to their linears.

The algorithms (`rtn`, `gptq`, `smoothquant`, `awq`) are pure tensor functions; this module is the plumbing
they share, as in IST-DASLab/gptq `llama.py` (`llama_sequential`) and llm-compressor's sequential pipeline:

1. `capture_layer_inputs`: run the calibration batches through the model until layer 0 and keep what it receives
   (hidden states and the keyword arguments the model computed: masks, rotary position embeddings).
2. `walk_layers`: for layer i, yield (i, layer, its inputs); when the caller is done with the layer (quantized it),
   run the *modified* layer on those inputs: its outputs are the inputs of layer i + 1, so later layers calibrate
   on the errors the earlier ones really make.
3. `collect_input_statistics`: forward hooks on chosen linears of a layer accumulate a statistic of their inputs
   X [tokens, in_features]: the Hessian 2XXᵀ/N (GPTQ), per-channel max |X| (SmoothQuant), mean |X| (AWQ).

Which linears a layer holds, and which share an input, comes from `llmlab.quant.mappings` (data, per family).
Quantization is fake-quantization in place: weights are replaced by their dequantized grid values (same dtype).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from llmlab.quant.formats import check_bits, check_group_size
from llmlab.quant.gptq import gptq
from llmlab.quant.mappings import ArchitectureMapping, decoder_layers, layer_linears, mapping_for, quantizable_linears
from llmlab.quant.rtn import rtn


@dataclass
class GPTQConfig:
    """GPTQ settings. Defaults: the paper's and llm-compressor's, except act_order (llm-compressor: on, "static"),
    off here as in the paper's main tables; on the embedded model it helps at 32 x 512 calibration tokens."""

    bits: int = 4  # integer bits per weight (2 to 8)
    group_size: int | None = 64  # consecutive input columns sharing one grid; None: one grid per output row
    symmetric: bool = True  # signed grid with zero point 0 (what W4A16 kernels expect); False: a zero point per group
    blocksize: int = 128  # columns per lazy batch update (Algorithm 1, B): speed only, unless groups straddle blocks
    percdamp: float = 0.01  # dampening λ = percdamp · mean(diag H) added to H's diagonal
    act_order: bool = False  # quantize columns in decreasing H[j, j] (with static groups)
    true_sequential: bool = False  # re-collect each group's Hessian after the earlier groups of the layer are quantized


@dataclass
class QuantizationReport:
    """What a model-level quantizer did."""

    method: str  # e.g. "rtn-w4g64", "gptq-w4g64"
    bits: int  # bits per quantized weight
    group_size: int | None  # columns per grid (None: per output row)
    quantized: list[str] = field(default_factory=list)  # full names of the Linear modules quantized
    seconds: float = 0.0  # wall time of the whole run, calibration included
    losses: dict[str, float] = field(default_factory=dict)  # GPTQ: linear name(s) -> OBS error estimate per token


def method_name(method: str, bits: int, group_size: int | None) -> str:
    """'gptq', 4, 64 -> 'gptq-w4g64' (per-row grids: 'gptq-w4')."""
    return f"{method}-w{bits}" + (f"g{group_size}" if group_size else "")


def check_model_group_size(model, bits: int, group_size: int | None,
                           mapping: ArchitectureMapping | None = None) -> None:
    """Refuse, before any work, a bit width or group size that some quantizable linear of `model` cannot take."""
    check_bits(bits)
    for name, linear in quantizable_linears(model, mapping).items():
        check_group_size(linear.in_features, group_size, bits, where=f" (the in_features of {name})")


def rtn_quantize_model(model, bits: int = 4, group_size: int | None = 64, symmetric: bool = True,
                       progress: bool = True) -> QuantizationReport:
    """Round every decoder-layer linear of `model` to nearest, in place (no calibration data)."""
    from tqdm.auto import tqdm

    check_model_group_size(model, bits, group_size)
    start = time.perf_counter()
    linears = quantizable_linears(model)
    with torch.no_grad():
        for linear in tqdm(linears.values(), desc=method_name("rtn", bits, group_size), disable=not progress):
            linear.weight.copy_(rtn(linear.weight, bits, group_size, symmetric))
    return QuantizationReport(method_name("rtn", bits, group_size), bits, group_size, list(linears),
                              time.perf_counter() - start)


# ---------------------------------------------------------------- activation capture (shared with SmoothQuant, AWQ)


@dataclass
class LayerInputs:
    """What a decoder layer receives for each calibration batch."""

    hidden_states: list[torch.Tensor]  # one [batch, seq_len, hidden] tensor per calibration batch
    kwargs: list[dict]  # per batch, the keyword arguments the model passed (attention mask, position embeddings…)

    @property
    def n_tokens(self) -> int:
        """Calibration tokens in all batches."""
        return sum(h.shape[0] * h.shape[1] for h in self.hidden_states)


class _ReachedLayer(Exception):
    """Raised by the capture hook to stop the forward pass at layer 0."""


@torch.no_grad()
def capture_layer_inputs(model, calibration_ids: torch.Tensor, batch_size: int = 8,
                         mapping: ArchitectureMapping | None = None) -> LayerInputs:
    """Run `calibration_ids` [n_samples, seq_len] through the model up to decoder layer 0 and keep its inputs."""
    first = decoder_layers(model, mapping)[0]
    captured = LayerInputs([], [])

    def stop_at_first_layer(module, args, kwargs):
        kwargs = dict(kwargs)
        captured.hidden_states.append(args[0] if args else kwargs.pop("hidden_states"))
        captured.kwargs.append(kwargs)
        raise _ReachedLayer

    device = next(model.parameters()).device
    handle = first.register_forward_pre_hook(stop_at_first_layer, with_kwargs=True)
    try:
        for batch in calibration_ids.split(batch_size):  # [n_samples, seq_len] -> [batch_size, seq_len] pieces
            with contextlib.suppress(_ReachedLayer):
                model(batch.to(device), use_cache=False)
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_layer(layer: torch.nn.Module, inputs: LayerInputs) -> LayerInputs:
    """The layer's outputs for every batch, packaged as the next layer's inputs."""
    outputs = []
    for hidden_states, kwargs in zip(inputs.hidden_states, inputs.kwargs):
        out = layer(hidden_states, **kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)  # older transformers return (hidden_states, ...)
    return LayerInputs(outputs, inputs.kwargs)


PROPAGATIONS = ("quantized", "float")  # what the next layer calibrates on: this layer's outputs after or before


def walk_layers(model, calibration_ids: torch.Tensor, batch_size: int = 8, progress: bool = True,
                desc: str = "layers", propagate: str = "quantized") -> Iterator[tuple[int, torch.nn.Module,
                                                                                      LayerInputs]]:
    """Yield (index, layer, inputs) for each decoder layer in order. The next layer's inputs are this layer's outputs:
    `propagate="quantized"`: of the layer as the caller left it (GPTQ: each layer corrects the errors of the layers
    before it); "float": of the layer before the caller's turn (llm-awq and llm-compressor's AWQ: every layer is
    calibrated on the float model's activations)."""
    from tqdm.auto import tqdm

    if propagate not in PROPAGATIONS:
        raise ValueError(f"propagate must be one of {PROPAGATIONS}, got {propagate!r}")
    mapping = mapping_for(model)
    inputs = capture_layer_inputs(model, calibration_ids, batch_size, mapping)
    layers = decoder_layers(model, mapping)
    for index in tqdm(range(len(layers)), desc=desc, unit="layer", disable=not progress):
        outputs = run_layer(layers[index], inputs) if propagate == "float" else None
        yield index, layers[index], inputs
        inputs = outputs if outputs is not None else run_layer(layers[index], inputs)


class HessianStatistic:
    """Running H = 2/N · Σ x xᵀ over the N input rows x [in_features] seen so far (GPTQ)."""

    def __init__(self, in_features: int, device=None):
        self.H = torch.zeros(in_features, in_features, device=device)  # [in, in]
        self.n_tokens = 0  # rows seen

    def add(self, X: torch.Tensor) -> None:
        X = X.reshape(-1, X.shape[-1]).float()  # [..., in] -> [N, in]
        self.H *= self.n_tokens / (self.n_tokens + X.shape[0])  # keep H an average as N grows
        self.n_tokens += X.shape[0]
        self.H += (2 / self.n_tokens) * X.T @ X


class ChannelStatistic:
    """Running per-input-channel max |x| (SmoothQuant's activation scales) and mean |x| (AWQ's saliency)."""

    def __init__(self, in_features: int, device=None):
        self.abs_max = torch.zeros(in_features, device=device)  # [in]
        self.abs_mean = torch.zeros(in_features, device=device)  # [in]
        self.n_tokens = 0  # rows seen

    def add(self, X: torch.Tensor) -> None:
        X = X.reshape(-1, X.shape[-1]).float().abs()  # [..., in] -> [N, in]
        self.abs_max = torch.maximum(self.abs_max, X.amax(dim=0))
        self.abs_mean = (self.abs_mean * self.n_tokens + X.sum(dim=0)) / (self.n_tokens + X.shape[0])
        self.n_tokens += X.shape[0]


@contextlib.contextmanager
def record_linear_inputs(linears: dict[str, torch.nn.Module], record: Callable[[str, torch.Tensor], None]):
    """While open, each forward of `linears[name]` calls `record(name, X)` with its input X [..., in_features]."""
    handles = [linear.register_forward_hook(lambda module, args, output, name=name: record(name, args[0].detach()))
               for name, linear in linears.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def collect_input_statistics(layer: torch.nn.Module, names, inputs: LayerInputs,
                             statistic: type = HessianStatistic) -> dict[str, object]:
    """Run `layer` on `inputs` once and return name -> `statistic` of the inputs of each linear in `names`."""
    linears = {name: layer.get_submodule(name) for name in names}
    stats = {name: statistic(linear.in_features, device=linear.weight.device) for name, linear in linears.items()}
    with record_linear_inputs(linears, lambda name, X: stats[name].add(X)):
        run_layer(layer, inputs)
    return stats


# ---------------------------------------------------------------- GPTQ over a model


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the block with `n` intra-op CPU threads (None: unchanged). GPTQ's column loop is thousands of small ops; on
    a shared CPU two threads wait on each other at every op: on this 2-core machine one [3072, 576] call took 0.35 s
    with one thread, 0.23 s with two when idle, and up to 16 s with two while other jobs ran."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def min_calibration_tokens(model) -> int:
    """Fewest calibration tokens for a full-rank Hessian in every quantized linear: the widest in_features."""
    return max(linear.in_features for linear in quantizable_linears(model).values())


def gptq_quantize_model(model, calibration_ids: torch.Tensor, config: GPTQConfig | None = None, batch_size: int = 8,
                        progress: bool = True) -> QuantizationReport:
    """Quantize every decoder-layer linear of `model` with GPTQ, in place, layer after layer.

    Linears that read the same input (q, k, v; gate, up) share one Hessian: their rows are stacked and quantized in
    one `gptq` call (rows are independent given H, so this equals quantizing them one by one).
    """
    config = config or GPTQConfig()
    mapping = mapping_for(model)
    check_model_group_size(model, config.bits, config.group_size, mapping)
    needed = min_calibration_tokens(model)
    if calibration_ids.dim() != 2 or calibration_ids.numel() < needed:
        raise ValueError(f"GPTQ needs at least {needed} calibration tokens (the widest layer's in_features) for a "
                         f"full-rank Hessian; got {calibration_ids.numel()} as shape {tuple(calibration_ids.shape)}: "
                         "pass more or longer samples [n_samples, seq_len], e.g. "
                         "calibration_batches(tokenizer, 32, 512)")
    start = time.perf_counter()
    name = method_name("gptq", config.bits, config.group_size)
    report = QuantizationReport(name, config.bits, config.group_size)
    for index, layer, inputs in walk_layers(model, calibration_ids, batch_size, progress, desc=name):
        groups = mapping.sequential
        stats = {} if config.true_sequential else collect_input_statistics(layer, [g[0] for g in groups], inputs)
        for group in groups:
            if config.true_sequential:  # the inputs of this group, after the earlier groups were quantized
                stats.update(collect_input_statistics(layer, [group[0]], inputs))
            linears = [layer.get_submodule(member) for member in group]
            W = torch.cat([linear.weight.detach() for linear in linears])  # [sum of out_features, in_features]
            with _threads(1 if W.device.type == "cpu" else None):
                result = gptq(W, stats[group[0]].H, config.bits, config.group_size, config.blocksize,
                              config.percdamp, config.act_order, config.symmetric)
            with torch.no_grad():
                for linear, Q in zip(linears, result.Q.split([lin.out_features for lin in linears])):
                    linear.weight.copy_(Q)
            report.losses[f"{mapping.layers}.{index}.{'+'.join(group)}"] = result.loss
        report.quantized += [f"{mapping.layers}.{index}.{member}" for member in layer_linears(layer, mapping)]
    report.seconds = time.perf_counter() - start
    return report
