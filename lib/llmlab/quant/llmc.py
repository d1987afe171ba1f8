"""The production path: the same methods through llm-compressor (vllm-project/llm-compressor) `oneshot` recipes.

llm-compressor is what people use to make checkpoints vLLM loads (compressed-tensors format). The course runs it on
the same model, calibration windows and evaluation text as its from-scratch methods, and compares. Each function
quantizes `model` in place (fake-quant during calibration, like ours: the weights hold their grid values afterwards)
with `lm_head` kept in 16-bit, as in our methods:

    llmc_gptq         GPTQModifier: symmetric int, groups along in_features, block 128, dampening 0.01, act-order
                      "static" (llm-compressor's default) — ours with `GPTQConfig(act_order=True)` is the same setting
    llmc_awq          AWQModifier (duo_scaling on by default: scales from activations *and* weights; off = the paper's)
                      then W4A16 symmetric int4 groups — ours with `AWQConfig(clip=False)` and duo_scaling off match
    llmc_smoothquant  SmoothQuantModifier(smoothing_strength=α), then W8A8 int8 (weights per channel, activations
                      per token, dynamic)
    llmc_fp8          QuantizationModifier(scheme="FP8_DYNAMIC"): e4m3 weights per channel, activations per token

Pitfalls met (DESIGN.md): `oneshot` reads the tokenizer from the model's folder, so the model must come from a saved
folder (the embedded model's cache is one); AWQ pins cached activations, which fails without an accelerator, so
pinning is a no-op on CPU-only machines; llm-compressor logs to stdout through loguru, so its output is routed to
stderr while it runs (a `--json` stdout stays clean); its sequential pipeline registers each recompiled forward's
namespace, which holds the model, with `torch.fx.wrap` in a registry torch never empties, so `_oneshot` drops those
entries after each run (else every calibrated run keeps its model alive: 0.5 GB each on the embedded model).
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to file descriptor 1 (loguru sinks, prints, C libraries) to stderr for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def quiet_progress_bars():
    """No tqdm bars for the block (llm-compressor draws two per layer: 60 bars per model in a notebook). tqdm reads
    its TQDM_* environment variables at import, so the bars are switched off where they are made."""
    from tqdm import std

    original = std.tqdm.__init__

    def silent(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = silent
    try:
        yield
    finally:
        std.tqdm.__init__ = original


@contextlib.contextmanager
def no_pinned_memory():
    """llm-compressor's AWQ pins its cached activations; without an accelerator pin_memory() raises "Cannot access
    accelerator device". Pinning only speeds up host-to-GPU copies, so on CPU it can be a no-op for the run."""
    original = torch.Tensor.pin_memory
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.pin_memory = original


@contextlib.contextmanager
def forget_fx_wraps():
    """Drop the `torch.fx.wrap` registrations the block made from code that is no imported module. llm-compressor's
    sequential pipeline (GPTQ, AWQ, SmoothQuant) recompiles each forward in a namespace holding `self` (the model),
    and its traced subgraphs' code wraps functions of that namespace; torch.fx keeps every registering namespace in
    its module-level `_wrapped_fns_to_patch`, never emptied: without this, every run keeps its model alive.
    Registrations made by modules imported in the block (their globals are the module's `__dict__`) stay."""
    from torch.fx import _symbolic_trace

    registry = getattr(_symbolic_trace, "_wrapped_fns_to_patch", None)  # {(id(globals), function name): globals}
    if registry is None:  # a torch that renamed its private table: nothing to drop here
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for key in set(registry) - before:
            module = sys.modules.get(registry[key].get("__name__", ""))
            if module is None or vars(module) is not registry[key]:
                del registry[key]


def available() -> tuple[bool, str]:
    """Whether llm-compressor can be imported here, and what to do if not."""
    try:
        import llmcompressor  # noqa: F401
    except ImportError as error:
        return False, (f"llm-compressor is not installed ({error}); `pip install llmcompressor` "
                       "(the course's `quant` extra) to run the llmc-* methods")
    return True, "llm-compressor " + getattr(sys.modules["llmcompressor"], "__version__", "?")


def _oneshot(model, calibration_ids: torch.Tensor, recipe) -> None:
    """llm-compressor's oneshot on `model` in place, on `calibration_ids` [n_samples, seq_len]."""
    import datasets
    from llmcompressor import oneshot

    from llmcompressor.core import reset_session

    rows = {"input_ids": calibration_ids.tolist(), "attention_mask": torch.ones_like(calibration_ids).tolist()}
    on_accelerator = next(model.parameters()).is_cuda
    with stdout_to_stderr(), quiet_progress_bars(), forget_fx_wraps(), \
            (contextlib.nullcontext() if on_accelerator else no_pinned_memory()):
        try:
            oneshot(model=model, dataset=datasets.Dataset.from_dict(rows), recipe=recipe,
                    num_calibration_samples=calibration_ids.shape[0], max_seq_length=calibration_ids.shape[1])
        finally:
            reset_session()  # the session holds the model and its calibration state: let them be freed


def _int_scheme(bits: int, group_size: int | None):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    strategy = dict(strategy="group", group_size=group_size) if group_size else dict(strategy="channel")
    return QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(num_bits=bits, type="int", symmetric=True,
                                                                           **strategy))


def llmc_gptq(model, calibration_ids: torch.Tensor, bits: int = 4, group_size: int | None = 64,
              act_order: bool = True) -> None:
    """llm-compressor's GPTQ: symmetric int `bits`, groups of `group_size` (None: per channel), lm_head kept."""
    from llmcompressor.modifiers.gptq import GPTQModifier

    _oneshot(model, calibration_ids, GPTQModifier(
        config_groups={"group_0": _int_scheme(bits, group_size)}, ignore=["lm_head"], block_size=128,
        dampening_frac=0.01, actorder="static" if act_order else None))


def llmc_awq(model, calibration_ids: torch.Tensor, bits: int = 4, group_size: int | None = 64,
             duo_scaling: bool = True) -> None:
    """llm-compressor's AWQ scales, then symmetric int `bits` weights in groups of `group_size`, lm_head kept."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    _oneshot(model, calibration_ids, [
        AWQModifier(duo_scaling=duo_scaling),
        QuantizationModifier(config_groups={"group_0": _int_scheme(bits, group_size)}, ignore=["lm_head"])])


def llmc_smoothquant(model, calibration_ids: torch.Tensor, alpha: float = 0.5) -> None:
    """llm-compressor's SmoothQuant, then W8A8: int8 weights per channel, int8 activations per token (dynamic)."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    _oneshot(model, calibration_ids, [SmoothQuantModifier(smoothing_strength=alpha),
                                      QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])])


def llmc_fp8(model, calibration_ids: torch.Tensor) -> None:
    """llm-compressor's FP8 dynamic: e4m3 weights per channel, e4m3 activations per token; no calibration needed
    (the ids are used only because oneshot wants a dataset)."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    _oneshot(model, calibration_ids[:1], QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC",
                                                              ignore=["lm_head"]))
