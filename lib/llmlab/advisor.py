"""The guide's deployment decision tree (§5) and production SLO checks (§6), as functions consistent with the planner.

The tree, as printed (`GUIDE_TREE`):
    1. H100 end to end (maximum performance and quality)  FP8 W8A8 + FP8 KV cache   TensorRT-LLM or vLLM --quantization fp8
    2. the universal choice (A100, standard GPUs)          INT8 SmoothQuant W8A8 + FP8 KV   vLLM --quantization int8
    3. high density / low budget                          INT4 AWQ (weight-only) + FP8 KV  vLLM --quantization awq
`guide_branch` picks a branch the way the guide does (native FP8 or not, quality or cost first); `advise` then asks the
planner whether that choice fits the GPU at the context and batch wanted, adds GPUs (then tries INT4) when it does not, and writes the command with `llmlab.engines.serve_command` (whose flags are checked against the engines'
sources: vLLM has no `--quantization int8`, and `--quantization awq` forces the slow kernel).

The SLO table (`GUIDE_SLOS`): TTFT p99 > 500 ms, KV-cache waste > 8 %, OOM errors > 0.5 % of requests, each with the
guide's corrective action and the course's reading of it. `slo_check(metrics)` evaluates a bench run's or a
simulation's metrics against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from llmlab.hardware import GPU, gpu as catalog_gpu, supports

PRIORITIES = ("quality", "cost")  # what the deployment optimizes first
TP_CHOICES = (1, 2, 4, 8)

# --------------------------------------------------------------------------------------------------------------
# The decision tree
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Branch:
    """One branch of the guide's §5 tree, as printed, and what it means for the planner."""

    key: str  # short name
    title: str  # the guide's heading (in English)
    method: str  # the guide's method
    precision: str  # planner weight format
    kv_dtype: str  # planner KV dtype
    engines: tuple[str, ...]  # the engines it names
    guide_argument: str  # the vLLM argument as printed
    benefit: str  # the guide's promise


GUIDE_TREE: tuple[Branch, ...] = (
    Branch("h100", "H100 end to end (maximum performance and quality)", "FP8 (W8A8) + FP8 KV cache", "fp8", "fp8",
           ("trtllm", "vllm"), "--quantization fp8",
           "fits a 70B on one H100, very fast, > 99 % of the quality kept"),
    Branch("universal", "the universal choice (robust on A100 and standard GPUs)",
           "INT8 SmoothQuant (W8A8) + FP8 KV cache", "int8", "fp8", ("vllm",), "--quantization int8",
           "ideal where native FP8 is not supported (e.g. A100 servers)"),
    Branch("density", "high density / reduced budget", "INT4 AWQ (weights only) + FP8 KV cache", "int4", "fp8",
           ("vllm",), "--quantization awq",
           "divides VRAM costs by 4; for non-critical internal chatbots where fluency beats complex reasoning"),
)


def guide_branch(gpu: str | GPU, priority: str = "quality") -> Branch:
    """The branch the guide would pick: cost first -> INT4; else native FP8 -> FP8; else INT8."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}; choose one of {', '.join(PRIORITIES)}")
    device = catalog_gpu(gpu)
    if priority == "cost":
        return GUIDE_TREE[2]
    return GUIDE_TREE[0] if supports(device, "fp8") else GUIDE_TREE[1]


@dataclass
class Advice:
    """What to deploy, why, and the command."""

    model: str  # catalog model
    gpu: str  # catalog GPU
    priority: str  # "quality" or "cost"
    context: int  # tokens per request planned for (the engine's max_model_len)
    batch: int  # concurrent requests planned for
    guide: Branch  # the guide's branch
    precision: str  # the weight format chosen
    kv_dtype: str  # the KV dtype chosen
    engine: str  # "vllm" or "trtllm"
    tp: int  # GPUs
    fits: bool  # whether the plan fits at context x batch
    max_context: int  # longest context at this batch (planner)
    max_concurrency: int  # most requests of `context` tokens at once (planner)
    command: str  # the shell command(s)
    guide_command: str  # the guide's argument, as printed
    reasons: list = field(default_factory=list)  # how the choice was reached, one line per step
    notes: list = field(default_factory=list)  # the engine's notes and the planner's warnings

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        lines = [f"**{self.model} on {self.tp}x {self.gpu}, {self.priority} first, {self.context:,} tokens x "
                 f"{self.batch}** → guide: *{self.guide.title}* ({self.guide.method}, `{self.guide.guide_argument}`)",
                 "",
                 f"- chosen: **{self.precision} weights + {self.kv_dtype} KV cache, {self.engine}, tp={self.tp}** — "
                 + (f"fits; up to {self.max_context:,} tokens at batch {self.batch}, {self.max_concurrency} "
                    f"request{'s' if self.max_concurrency != 1 else ''} of {self.context:,} tokens at once"
                    if self.fits else "**does not fit**"),
                 *[f"- {reason}" for reason in self.reasons], "", "```bash", self.command, "```",
                 *[f"- note: {note}" for note in self.notes]]
        return "\n".join(lines)


def advise(model: str, gpu: str | GPU, priority: str = "quality", context: int = 8192, batch: int = 1,
           engine: str = "vllm", max_tp: int = 8) -> Advice:
    """The guide's branch for this GPU and priority, checked by the planner and made to fit, with its command.

    If the branch's format does not fit `batch` requests of `context` tokens, it adds tensor-parallel GPUs (2, 4, 8, up
    to max_tp), then tries INT4 weights the same way, saying so in `reasons`. FP8 on a GPU without FP8 tensor cores is never
    chosen; the KV cache stays fp8 everywhere vLLM stores it (converted to 16-bit in the kernel below 8.9).
    """
    from llmlab.engines import serve_command
    from llmlab.memory import plan

    device = catalog_gpu(gpu)
    branch = guide_branch(device, priority)
    precision, kv_dtype = branch.precision, branch.kv_dtype
    reasons = [f"the guide's branch: {branch.method} ({'native FP8' if supports(device, 'fp8') else 'no FP8'} on "
               f"{device.name}, compute capability {device.capability_text}, {device.memory_gb:g} GB)"]
    if engine == "trtllm" and kv_dtype == "fp8" and not supports(device, "fp8"):
        kv_dtype = "fp16" if not supports(device, "bf16") else "bf16"
        reasons.append(f"TensorRT-LLM's fp8 KV cache needs compute capability 8.9: {kv_dtype} KV cache instead")
    # quality first keeps the branch's format and adds GPUs before going to INT4; cost first is INT4 already
    formats = (precision,) if precision == "int4" else (precision, "int4")
    candidates = [(option, tp) for option in formats for tp in TP_CHOICES if tp <= max_tp]
    chosen = None
    for option, tp in candidates:
        try:
            result = plan(model, option, kv_dtype, context, batch, device, tp)
        except ValueError as refusal:  # a tp that does not split this model, a group size that does not divide
            reasons.append(f"{option} on tp={tp}: {refusal}")
            continue
        if result.fits and result.max_concurrency >= batch:
            chosen = (option, tp, result)
            break
        reasons.append(f"{option} + {kv_dtype} KV on {tp}x {device.name} does not hold {batch} x {context:,} tokens "
                       f"({result.per_gpu_bytes / 1e9:.1f} GB per GPU > budget {result.budget_bytes / 1e9:.1f} GB)")
    if chosen is None:
        option, tp = candidates[-1]
        result = plan(model, option, kv_dtype, context, batch, device, tp)
        return Advice(model, device.name, priority, context, batch, branch, option, kv_dtype, engine, tp, False,
                      result.max_context or 0, result.max_concurrency or 0,
                      "# nothing fits: fewer tokens, a larger GPU or more GPUs", branch.guide_argument, reasons,
                      list(result.warnings))
    option, tp, result = chosen
    if (option, tp) != (precision, 1):
        reasons.append(f"chosen instead: {option} weights on tp={tp}")
    notes = [warning for warning in result.warnings if not warning.startswith("fp8 KV cache on")]  # the engine says it
    try:
        command = serve_command(engine, model, device, option, kv_dtype, tp, context)
        text, notes = command.text(), notes + command.notes
    except ValueError as refusal:
        text = f"# {engine} would refuse this plan: {refusal}"
    return Advice(model, device.name, priority, context, batch, branch, option, kv_dtype, engine, tp, True,
                  result.max_context, result.max_concurrency, text, branch.guide_argument, reasons, notes)


# --------------------------------------------------------------------------------------------------------------
# Production SLOs
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SLO:
    """One row of the guide's §6 monitoring table."""

    metric: str  # key in a metrics dict
    label: str  # the guide's metric, in English
    threshold: float  # alert when the value exceeds it
    unit: str  # how the value is expressed
    guide_action: str  # the guide's corrective action, as printed
    action: str  # the course's reading: what to check first, and when the guide's action helps


GUIDE_SLOS: tuple[SLO, ...] = (
    SLO("ttft_p99_s", "latency: time to first token, p99", 0.5, "s", "Scale-out ou bascule vers profil INT4.",
        "TTFT is queueing + prefill. Scale out (more replicas, or a larger max_num_batched_tokens so prompts are not "
        "cut in many chunks) when the queue grows; INT4 (W4A16) speeds the memory-bound decode steps that hold the "
        "queue, not the compute-bound prefill, so it helps only when decode dominates the load"),
    SLO("kv_waste_fraction", "KV-cache waste", 0.08, "fraction of the KV memory in use",
        "Vérifier configuration PagedAttention.",
        "with paged blocks the waste is about half a block per sequence: check that the engine pages its KV cache "
        "and that block_size is small against the typical sequence (16 in vLLM); contiguous max-length reservation "
        "wastes most of it"),
    SLO("error_fraction", "OOM errors", 0.005, "fraction of requests", "Réduire le contexte max ou KV en FP8.",
        "a paged engine preempts (recomputes) rather than running out of KV memory, so errors usually mean requests "
        "longer than max_model_len (rejected) or an OOM outside the KV pool (activations of long prefills): an fp8 KV "
        "cache doubles the tokens held; a smaller max_model_len rejects more requests but frees nothing in vLLM, whose "
        "pool is sized by gpu_memory_utilization; lower max_num_batched_tokens or gpu_memory_utilization for OOMs"),
)


@dataclass
class Finding:
    """One SLO evaluated on one set of metrics."""

    metric: str  # the SLO's metric key
    label: str  # the guide's name for it
    value: float | None  # the measured or simulated value; None when the metrics do not have it
    threshold: float  # the alert threshold
    breached: bool | None  # value > threshold; None when not measured
    action: str  # what to do (the course's reading) when breached, else ""
    guide_action: str  # the guide's action, as printed

    def line(self) -> str:
        if self.value is None:
            return f"{self.label}: not measured"
        state = "ALERT" if self.breached else "ok"
        return (f"{self.label}: {self.value:.4g} vs threshold {self.threshold:g} -> {state}"
                + (f"; {self.action}" if self.breached else ""))


def slo_check(metrics: dict, slos: tuple[SLO, ...] = GUIDE_SLOS) -> list[Finding]:
    """Each SLO against `metrics`: the load generator's metrics, a BatchingResult.summary(), a paged
    SimResult.to_dict(), or any dict with the keys ttft_p99_s (seconds), kv_waste_fraction, error_fraction."""
    values = _slo_values(metrics)
    findings = []
    for slo in slos:
        value = values.get(slo.metric)
        breached = None if value is None else value > slo.threshold
        findings.append(Finding(slo.metric, slo.label, value, slo.threshold, breached,
                                slo.action if breached else "", slo.guide_action))
    return findings


def _slo_values(metrics: dict) -> dict:
    """The SLO metrics from the names the course's tools use: the load generator's (vLLM's names: p99_ttft_ms,
    completed, failed), a BatchingResult summary (the same), a paged SimResult (waste_fraction), or the SLO keys."""
    values = {key: metrics[key] for key in ("ttft_p99_s", "kv_waste_fraction", "error_fraction")
              if metrics.get(key) is not None}
    if "kv_waste_fraction" not in values and metrics.get("waste_fraction") is not None:
        values["kv_waste_fraction"] = metrics["waste_fraction"]
    if "ttft_p99_s" not in values and metrics.get("p99_ttft_ms") is not None:
        values["ttft_p99_s"] = metrics["p99_ttft_ms"] / 1e3
    if "error_fraction" not in values and metrics.get("failed") is not None and metrics.get("completed") is not None:
        sent = metrics["failed"] + metrics["completed"]
        if sent:
            values["error_fraction"] = metrics["failed"] / sent
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"metric {key} must be a number >= 0, not {value!r}")
    return values
