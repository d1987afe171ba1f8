"""The quantization matrix (chapter 08, `llmlab quantize-matrix`): every method on one model, one evaluator.

Each method starts from a fresh copy of the model and sees the same calibration windows and evaluation ids; the
matrix reports, per method, perplexity (`llmlab.evaluate.perplexity`, non-overlapping windows), the weight bytes a
checkpoint in that format holds (codes + scales; embeddings, norms and lm_head at 16 bits), the seconds quantization
took (wall and CPU), and, with `speed=True`, decode tokens/s with the real low-precision kernel for that format
(`llmlab.quant.kernels`). Method names (DESIGN.md contract):

    fp16                          the 16-bit baseline (the embedded model: its Q4_1 file dequantized, in float32)
    rtn-w4g64, rtn-w3g64          round to nearest, symmetric int4 / int3, groups of 64 input columns (any wNgG)
    gptq-w4g64[-actorder]         ours (IST-DASLab/gptq's algorithm); -actorder: columns by decreasing H[j, j]
    awq-w4g64[-noclip]            ours (llm-awq's algorithm, with its clipping search unless -noclip)
    w8a8-naive, w8a8-per-token    INT8 weights per channel; activations per tensor (naive) / per token, no smoothing
    smoothquant-w8a8[-aX]         ours, migration strength α = X (default 0.5), then W8A8 per token
    fp8-w8a8                      FP8 e4m3 weights per channel, activations per token (dynamic)
    bnb-int8, bnb-nf4             bitsandbytes LLM.int8 (threshold 6.0) and NF4, through transformers
    llmc-gptq-w4g64               llm-compressor GPTQModifier (act-order "static", its default)
    llmc-awq-w4g64[-noduo]        llm-compressor AWQModifier (duo_scaling on by default; -noduo: the paper's scales)
    llmc-smoothquant-w8a8[-aX]    llm-compressor SmoothQuantModifier + W8A8
    llmc-fp8-w8a8                 llm-compressor FP8_DYNAMIC

`comparisons` pairs ours with llm-compressor's at the same settings (perplexity and time ratios).
"""

from __future__ import annotations

import copy
import gc
import re
import time
from dataclasses import asdict, dataclass, field

import torch

from llmlab.quant.formats import check_bits

FAMILIES = ("fp16", "rtn", "gptq", "awq", "w8a8", "smoothquant", "fp8", "bnb", "llmc-gptq", "llmc-awq",
            "llmc-smoothquant", "llmc-fp8")
EXAMPLES = ("fp16", "rtn-w4g64", "gptq-w4g64", "gptq-w3g64", "awq-w4g64", "w8a8-naive", "smoothquant-w8a8",
            "fp8-w8a8", "bnb-int8", "bnb-nf4", "llmc-gptq-w4g64", "llmc-awq-w4g64", "llmc-smoothquant-w8a8")
DEFAULT_METHODS = ("fp16", "rtn-w4g64", "gptq-w4g64", "awq-w4g64", "rtn-w3g64", "gptq-w3g64", "w8a8-naive",
                   "w8a8-per-token", "smoothquant-w8a8", "fp8-w8a8", "bnb-int8", "bnb-nf4", "llmc-gptq-w4g64",
                   "gptq-w4g64-actorder", "llmc-awq-w4g64", "llmc-smoothquant-w8a8", "llmc-fp8-w8a8")
_WEIGHT_ONLY = re.compile(r"^(rtn|gptq|awq|llmc-gptq|llmc-awq)-w(\d+)(?:g(\d+))?(-actorder|-noclip|-noduo)?$")
_SMOOTHQUANT = re.compile(r"^(llmc-)?smoothquant-w8a8(?:-a([0-9]*\.?[0-9]+))?$")
_OPTIONS = {"gptq": ("-actorder",), "awq": ("-noclip",), "llmc-awq": ("-noduo",)}  # suffixes each family takes


@dataclass(frozen=True)
class Method:
    """A parsed method name: what runs, on what grid, and which real kernel executes its format."""

    name: str  # as given, e.g. "gptq-w4g64-actorder"
    family: str  # one of FAMILIES
    bits: int  # bits per quantized weight (16 for the baseline)
    group_size: int | None = None  # input columns per weight scale; None: one per output row
    option: str = ""  # "-actorder", "-noclip", "-noduo" or ""
    alpha: float | None = None  # SmoothQuant migration strength
    kernel: str | None = None  # llmlab.quant.kernels kernel that runs this format for the speed column


def parse_method(name: str) -> Method:
    """'gptq-w4g64' -> Method(family='gptq', bits=4, group_size=64, kernel='int4'); unknown names are refused."""
    name = name.strip()
    if name in ("fp16", "bf16"):
        return Method(name, "fp16", 16, kernel="bf16")
    if name in ("w8a8-naive", "w8a8-per-token"):
        return Method(name, "w8a8", 8, kernel="int8")
    if name in ("fp8-w8a8", "llmc-fp8-w8a8"):
        return Method(name, "llmc-fp8" if name.startswith("llmc") else "fp8", 8, kernel="fp8")
    if name in ("bnb-int8", "bnb-nf4"):
        return Method(name, "bnb", 8 if name == "bnb-int8" else 4)
    match = _SMOOTHQUANT.match(name)
    if match:
        alpha = float(match[2]) if match[2] else 0.5
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{name}: the migration strength α must lie in [0, 1], e.g. smoothquant-w8a8-a0.75")
        return Method(name, "llmc-smoothquant" if match[1] else "smoothquant", 8, alpha=alpha, kernel="int8")
    match = _WEIGHT_ONLY.match(name)
    if match:
        family, bits, group, option = match[1], int(match[2]), match[3], match[4] or ""
        check_bits(bits)
        if option and option not in _OPTIONS.get(family, ()):
            raise ValueError(f"{name}: {family} takes no {option!r} option"
                             + (f"; it takes {', '.join(_OPTIONS[family])}" if family in _OPTIONS else ""))
        return Method(name, family, bits, int(group) if group else None, option,
                      kernel="int4" if bits == 4 else None)
    raise ValueError(f"unknown method {name!r}; methods look like {', '.join(EXAMPLES)} "
                     "(any bits/group: gptq-w3g32; SmoothQuant α: smoothquant-w8a8-a0.75)")


# ---------------------------------------------------------------- one method


@dataclass
class MatrixRow:
    """One method's measurements."""

    method: str
    status: str  # "ok", or "skipped" (with the reason) when this machine cannot run it
    perplexity: float | None = None  # on the evaluation ids, windows of `seq_len`
    weight_bytes: int | None = None  # bytes of a checkpoint in this format (codes + scales, 16-bit rest)
    quantize_seconds: float | None = None  # wall time of the quantization, calibration included
    quantize_cpu_seconds: float | None = None  # process CPU time of the same (fairer on a shared machine)
    eval_seconds: float | None = None  # wall time of the perplexity evaluation
    decode_tokens_per_s: float | None = None  # with the real kernel for this format (speed=True)
    speed_kernel: str | None = None  # which kernel the speed column used
    device: str = "cpu"
    reason: str = ""  # why skipped, or what to know about this row
    extra: dict = field(default_factory=dict)  # method-specific figures (AWQ α per layer, ...)


def _packed_bytes(model, method: Method, names) -> int:
    from llmlab.evaluate import packed_weight_bytes

    if method.family == "fp16":
        return sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values()) * 2
    return packed_weight_bytes(model, names, method.bits, method.group_size)


def quantize(model, method: Method, calibration_ids: torch.Tensor, progress: bool = False) -> dict:
    """Apply `method` to `model` in place (fake quantization: weights hold their grid values); returns extras."""
    from llmlab.quant import llmc
    from llmlab.quant.awq import AWQConfig, awq_quantize_model
    from llmlab.quant.driver import GPTQConfig, gptq_quantize_model, rtn_quantize_model
    from llmlab.quant.smoothquant import smoothquant_quantize_model
    from llmlab.quant.w8a8 import quantize_model_w8a8

    family = method.family
    if family == "rtn":
        rtn_quantize_model(model, method.bits, method.group_size, progress=progress)
    elif family == "gptq":
        report = gptq_quantize_model(model, calibration_ids, GPTQConfig(
            method.bits, method.group_size, act_order=method.option == "-actorder"), progress=progress)
        return {"gptq_loss_per_token_sum": sum(report.losses.values())}
    elif family == "awq":
        report = awq_quantize_model(model, calibration_ids, AWQConfig(
            method.bits, method.group_size, clip=method.option != "-noclip"), progress=progress)
        return {"alphas": report.alphas}
    elif family == "w8a8":
        quantize_model_w8a8(model, "per-tensor" if method.name == "w8a8-naive" else "per-token", "int8")
    elif family == "fp8":
        quantize_model_w8a8(model, "per-token", "fp8")
    elif family == "smoothquant":
        smoothquant_quantize_model(model, calibration_ids, method.alpha)
    elif family == "llmc-gptq":
        llmc.llmc_gptq(model, calibration_ids, method.bits, method.group_size)
    elif family == "llmc-awq":
        llmc.llmc_awq(model, calibration_ids, method.bits, method.group_size, duo_scaling=method.option != "-noduo")
    elif family == "llmc-smoothquant":
        llmc.llmc_smoothquant(model, calibration_ids, method.alpha)
    elif family == "llmc-fp8":
        llmc.llmc_fp8(model, calibration_ids)
    return {}


def check_method_runs(method: Method, model, calibration_ids: torch.Tensor | None, device: torch.device) -> str:
    """'' when `method` can run here on `model`; otherwise why not (skipped row). Impossible settings raise.
    bitsandbytes' rows load their own model: for them `model` may be None."""
    from llmlab.quant.driver import check_model_group_size, min_calibration_tokens

    if method.family in ("rtn", "gptq", "awq", "llmc-gptq", "llmc-awq"):
        check_model_group_size(model, method.bits, method.group_size)  # group 128 on 576 columns: "try 64 or 96"
    if method.family in ("gptq", "llmc-gptq") and calibration_ids is not None:
        need = min_calibration_tokens(model)
        if calibration_ids.numel() < need:
            raise ValueError(f"{method.name} needs at least {need} calibration tokens for a full-rank Hessian "
                             f"(the widest in_features); got {calibration_ids.numel()}: raise --calib-samples")
    if method.family.startswith("llmc"):
        from llmlab.quant.llmc import available

        ok, reason = available()
        if not ok:
            return reason
    if method.family == "bnb":
        from llmlab.quant.bnb import bnb_available

        ok, reason = bnb_available(device)
        if not ok:
            return reason
    return ""


@torch.no_grad()
def _decode_speed(model, method: Method, prompt_ids: torch.Tensor, new_tokens: int) -> tuple[float | None, str]:
    """Decode tokens/s of `model` (a fake-quantized copy) run with the real kernel for its format."""
    from llmlab.evaluate import measure_latency
    from llmlab.quant.kernels import INT4_GROUP_SIZES, convert_model, kernel_available

    if method.family == "bnb":  # already runs bitsandbytes' own kernels
        return measure_latency(model, prompt_ids, new_tokens).decode_tokens_per_s, "bitsandbytes"
    if method.kernel is None:
        return None, f"no real kernel for {method.bits}-bit weights here (int4 only)"
    device = next(model.parameters()).device
    ok, reason = kernel_available(method.kernel, device)
    if not ok:
        return None, reason
    if method.kernel == "int4" and method.group_size not in INT4_GROUP_SIZES:
        return None, f"torch's int4 kernel takes groups {INT4_GROUP_SIZES}, not {method.group_size}"
    fast = copy.deepcopy(model).to(torch.bfloat16)
    if method.kernel != "bf16":  # speed only: codes re-derived from the grid values (weight values don't change speed)
        convert_model(fast, method.kernel, group_size=method.group_size or 128)
    return measure_latency(fast, prompt_ids, new_tokens).decode_tokens_per_s, method.kernel


@torch.no_grad()
def load_private_copy(model_source: str, device: torch.device):
    """A fresh model from `model_source` on `device` whose every tensor owns its memory.

    transformers maps a safetensors file into memory and makes each tensor a view into that one mapping: the load is
    instant, but the mapping, and every page of it read so far, stays resident while any tensor (the embedding)
    still points into it. A method that swaps its linears for new modules (W8A8, SmoothQuant, FP8) would keep the old
    weights' pages beside the new ones (0.4 GB on the embedded model); tensors read one by one (pread) are freed with
    their module. On a GPU, or for weights not in a local folder, this is `load_model`'s model as it comes."""
    from pathlib import Path

    from safetensors import safe_open

    from llmlab.zoo import load_model, resolve

    model, _, _ = load_model(model_source, device=device)
    folder = Path(resolve(model_source)[0])
    if device.type != "cpu" or not folder.is_dir():
        return model
    parameters = dict(model.named_parameters())  # a tied weight once, under its first name (the embedding)
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt", backend="pread") as checkpoint:
            for name in checkpoint.keys():
                if name in parameters:  # a checkpoint name transformers renames keeps its mapped view
                    parameters[name].data = checkpoint.get_tensor(name).to(parameters[name].dtype)
    return model


def run_method(method: str | Method, calibration_ids: torch.Tensor, evaluation_ids: torch.Tensor,
               model_source: str = "smollm2-135m", device="cpu", seq_len: int = 512, speed: bool = False,
               new_tokens: int = 32, progress: bool = False) -> MatrixRow:
    """Quantize a fresh copy of `model_source` with `method` on `device`, then measure it (see the module docstring)."""
    from llmlab.evaluate import perplexity
    from llmlab.quant.mappings import quantizable_linears

    method = parse_method(method) if isinstance(method, str) else method
    device = torch.device(device)
    if method.family == "bnb":
        from llmlab.quant.bnb import load_bnb

        reason = check_method_runs(method, None, calibration_ids, device)  # bitsandbytes' checks need no model
        if reason:
            return MatrixRow(method.name, "skipped", device=str(device), reason=reason)
        start, start_cpu = time.perf_counter(), time.process_time()
        model, _ = load_bnb("int8" if method.name == "bnb-int8" else "nf4", device=device, model=model_source)
        row = MatrixRow(method.name, "ok", quantize_seconds=time.perf_counter() - start,
                        quantize_cpu_seconds=time.process_time() - start_cpu, device=str(device),
                        reason="weights quantized at load time (no calibration)")
        row.weight_bytes = _bnb_bytes(model)
    else:
        model = load_private_copy(model_source, device)
        reason = check_method_runs(method, model, calibration_ids, device)
        if reason:
            return MatrixRow(method.name, "skipped", device=str(device), reason=reason)
        names = list(quantizable_linears(model)) if method.family != "fp16" else []  # before modules are swapped
        # sized before quantizing: llm-compressor adds weight_scale / zero-point parameters that would count twice
        weight_bytes = _packed_bytes(model, method, names)
        start, start_cpu = time.perf_counter(), time.process_time()
        extra = quantize(model, method, calibration_ids, progress) if method.family != "fp16" else {}
        row = MatrixRow(method.name, "ok", weight_bytes=weight_bytes, quantize_seconds=time.perf_counter() - start,
                        quantize_cpu_seconds=time.process_time() - start_cpu, device=str(device), extra=extra)
    start = time.perf_counter()
    row.perplexity = perplexity(model, evaluation_ids, seq_len)
    row.eval_seconds = time.perf_counter() - start
    if speed:
        try:
            row.decode_tokens_per_s, row.speed_kernel = _decode_speed(model, method, evaluation_ids[:, :64],
                                                                      new_tokens)
        except (RuntimeError, ValueError) as error:  # a kernel that refuses this shape: the row keeps its quality
            row.speed_kernel = f"failed: {str(error).splitlines()[0][:160]}"
    return row


def _bnb_bytes(model) -> int:
    """Bytes bitsandbytes holds for the model's parameters and quantization state (codes, absmax, outlier data)."""
    try:
        from llmlab.quant.bnb import bnb_weight_bytes

        return bnb_weight_bytes(model)
    except ImportError:
        from llmlab.evaluate import weight_bytes_of

        return weight_bytes_of(model)


# ---------------------------------------------------------------- the matrix


def comparisons(rows: list[MatrixRow]) -> dict[str, dict]:
    """Ours over llm-compressor's at the same settings, for every pair that ran: perplexity and time ratios."""
    by_method = {row.method: row for row in rows if row.status == "ok"}
    pairs = {"gptq (act-order static)": ("gptq-w4g64-actorder", "llmc-gptq-w4g64"),
             "awq (each with its defaults)": ("awq-w4g64", "llmc-awq-w4g64"),
             "awq (the paper's scales, no clipping)": ("awq-w4g64-noclip", "llmc-awq-w4g64-noduo"),
             "fp8 dynamic": ("fp8-w8a8", "llmc-fp8-w8a8")}
    for method in by_method:
        match = _SMOOTHQUANT.match(method)
        if match and not match[1]:
            pairs[f"smoothquant α={float(match[2] or 0.5):g}"] = (method, "llmc-" + method)
    result = {}
    for label, (ours, theirs) in pairs.items():
        if ours in by_method and theirs in by_method:
            a, b = by_method[ours], by_method[theirs]
            result[label] = {"ours": ours, "llmcompressor": theirs,
                             "perplexity_ratio": a.perplexity / b.perplexity,
                             "time_ratio": a.quantize_seconds / b.quantize_seconds,
                             "cpu_time_ratio": a.quantize_cpu_seconds / max(b.quantize_cpu_seconds, 1e-9)}
    return result


def _trim_heap() -> None:
    """Hand glibc's free heap pages back to the OS (malloc_trim): blocks under the mmap threshold that a method freed
    (its smaller tensors, Python objects) would otherwise stay resident under the next method. No-op off glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_matrix(methods=DEFAULT_METHODS, calib_samples: int = 32, seq_len: int = 512, eval_tokens: int = 16384,
               model_source: str = "smollm2-135m", device="cpu", speed: bool = False,
               on_row=None) -> dict:
    """Every method of `methods` on fresh copies of one model; returns {"setup", "rows", "comparisons"}.

    All names are parsed before any work, so a typo fails in a second, not after an hour. `on_row(row)` is called as
    each method finishes (the CLI prints progress with it)."""
    from llmlab.data import calibration_batches, evaluation_ids
    from llmlab.zoo import load_model

    from llmlab.measure import _release_freed_memory_to_the_os

    parsed = [parse_method(m) if isinstance(m, str) else m for m in methods]
    _release_freed_memory_to_the_os()  # each method loads a fresh model: freed copies must not pile up in the heap
    if calib_samples < 1 or seq_len < 16 or eval_tokens < seq_len:
        raise ValueError(f"need calib_samples >= 1, seq_len >= 16 and eval_tokens >= seq_len; got {calib_samples}, "
                         f"{seq_len}, {eval_tokens}")
    device = torch.device(device)
    probe, tokenizer, _ = load_model(model_source)
    calibration_ids = calibration_batches(tokenizer, calib_samples, seq_len)  # [samples, seq_len]
    eval_ids = evaluation_ids(tokenizer, eval_tokens)  # [1, eval_tokens]
    for method in parsed:  # refuse impossible settings (group size, calibration tokens) before any work
        check_method_runs(method, probe, calibration_ids, device)
    del probe
    rows = []
    for method in parsed:
        rows.append(run_method(method, calibration_ids, eval_ids, model_source, device, seq_len, speed))
        gc.collect()  # each method's model goes before the next one loads (Binder has about 2 GB); llm-compressor
        _trim_heap()  # leaves its models in reference cycles, which only the collector frees
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if on_row:
            on_row(rows[-1])
    setup = {"model": model_source, "device": str(device), "threads": torch.get_num_threads(),
             "calibration": f"{calib_samples} x {seq_len} tokens", "calib_samples": calib_samples,
             "seq_len": seq_len, "eval_tokens": eval_ids.shape[1], "perplexity_window": seq_len, "speed": speed}
    return {"setup": setup, "rows": [asdict(row) for row in rows], "comparisons": comparisons(rows)}


def merge(previous: dict, result: dict) -> dict:
    """`result` with the rows of an earlier run (`previous`, a stored result: {"provenance", "measurements"}) that
    it did not re-run, when both used the same settings; comparisons recomputed. Lets a long matrix run in parts."""
    earlier = previous["measurements"]
    same = {k: v for k, v in earlier["setup"].items() if k != "threads"} == \
        {k: v for k, v in result["setup"].items() if k != "threads"}
    if not same:
        raise ValueError("the stored matrix was measured with other settings (model, device, tokens, speed): "
                         "save under another name or re-run its methods")
    rerun = {row["method"] for row in result["rows"]}
    rows = [row for row in earlier["rows"] if row["method"] not in rerun] + result["rows"]
    parts = earlier.get("parts", [previous["provenance"]["command"]])
    return {**result, "rows": rows, "comparisons": comparisons([MatrixRow(**row) for row in rows]),
            "parts": parts + ["(this run: see provenance)"], "merged_from": previous["provenance"]}


def format_matrix(result: dict) -> str:
    """The matrix as a fixed-width table, perplexity relative to the baseline when it ran."""
    rows = result["rows"]
    baseline = next((r["perplexity"] for r in rows if r["method"] in ("fp16", "bf16") and r["status"] == "ok"), None)
    speed = any(r["decode_tokens_per_s"] for r in rows)
    lines = [f"{'method':<26} {'perplexity':>10} {'vs 16-bit':>9} {'weights MB':>10} {'quantize s':>10} "
             f"{'cpu s':>7}" + (f" {'decode tok/s':>12} {'kernel':>12}" if speed else "")]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['method']:<26} skipped: {r['reason']}")
            continue
        ratio = f"{r['perplexity'] / baseline:9.3f}" if baseline else f"{'':>9}"
        line = (f"{r['method']:<26} {r['perplexity']:10.3f} {ratio} {r['weight_bytes'] / 1e6:10.1f} "
                f"{r['quantize_seconds']:10.1f} {r['quantize_cpu_seconds']:7.1f}")
        if speed:
            tps = f"{r['decode_tokens_per_s']:12.1f}" if r["decode_tokens_per_s"] else f"{'-':>12}"
            line += f" {tps} {r['speed_kernel'] or '-':>12}"
        lines.append(line)
    for label, c in result["comparisons"].items():
        lines.append(f"ours / llm-compressor, {label}: perplexity ×{c['perplexity_ratio']:.3f}, "
                     f"time ×{c['time_ratio']:.2f} (CPU time ×{c['cpu_time_ratio']:.2f})")
    return "\n".join(lines)
