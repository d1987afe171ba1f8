"""The claims register: each claim of the guide, how the course checks it, the measured value and a verdict.

Each claim's measurement is a function of the library (and of stored GPU results), so the register in
`data/claims.json` is generated, never typed: `python -m llmlab.claims` rewrites it, and tests/test_claims.py fails
when the stored register differs from what the library computes now. Verdicts: holds / approximate / wrong.
Chapters add their claims here as they land.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Callable

from llmlab.paths import data_dir

VERDICTS = ("holds", "approximate", "wrong")
GiB, GB = 2**30, 10**9


@dataclass(frozen=True)
class Claim:
    id: str  # short stable key
    section: str  # the guide's section, e.g. "1" or "2"
    quote: str  # the guide's own words (French)
    claim: str  # the claim in English
    how: str  # how the course checks it
    notebook: str  # where the course shows it
    measure: Callable[[], tuple[str, str]]  # -> (the measured value in words, verdict)


def _activations_minimal() -> tuple[str, str]:
    from llmlab.results import load_result

    stored = load_result("gpu-memory-anatomy")
    model = next(m for m in stored["measurements"]["models"] if m["model"] == "llama-3.1-8b")
    rows = {(p["batch"], p["context"]): p for p in model["points"] if not p.get("all_logits") and not p.get("oom")}

    def transient(point):  # what the forward pass held at its peak beyond weights and the KV it wrote
        return point["peak_allocated_bytes"] - point["allocated_before_bytes"] - point["kv_bytes"]

    small, large = rows[(1, 1024)], rows[(16, 8192)]
    text = (f"Llama-3.1-8B bf16 prefill on an H100: activations peak at {transient(small) / GiB:.2f} GiB for 1×1024 "
            f"tokens ({transient(small) / model['weights_allocated_bytes']:.1%} of the weights) but "
            f"{transient(large) / GiB:.1f} GiB for 16×8192 tokens ({transient(large) / large['kv_bytes']:.0%} of "
            f"that batch's KV cache)")
    return text, "approximate"


def _kv_linear() -> tuple[str, str]:
    from llmlab.memory import kv_cache_bytes
    from llmlab.models import load_spec

    spec = load_spec("llama-3.1-8b")
    base = kv_cache_bytes(spec, 1024, 1)
    ratios = {(c, b): kv_cache_bytes(spec, c, b) / base for c, b in ((2048, 1), (1024, 4), (8192, 8))}
    linear = all(abs(r - c * b / 1024) < 1e-9 for (c, b), r in ratios.items())
    gemma = load_spec("gemma-2-9b")
    capped = kv_cache_bytes(gemma, 32768, 1) / kv_cache_bytes(gemma, 4096, 1)
    text = (f"exactly linear in context × batch for full-attention layers (Llama-3.1-8B: ×{ratios[(8192, 8)]:.0f} "
            f"for 8× the context and 8× the batch); sliding-window layers stop growing at the window "
            f"(Gemma-2-9B: 8× the context → ×{capped:.2f} the KV)")
    return text, "holds" if linear else "wrong"


def _kv_formula() -> tuple[str, str]:
    from llmlab.memory import kv_bytes_guide, kv_cache_bytes
    from llmlab.models import catalog_names, load_spec

    ratios = {}
    for name in catalog_names():
        spec = load_spec(name)
        ratios[name] = kv_bytes_guide(spec, 4096, 1) / kv_cache_bytes(spec, 4096, 1)
    exact = sorted(name for name, r in ratios.items() if abs(r - 1) < 1e-9)
    off = {name: r for name, r in ratios.items() if abs(r - 1) >= 1e-9}
    listed = ", ".join(f"{name} ×{r:.2f}" for name, r in sorted(off.items()))
    text = (f"exact for {len(exact)} of {len(ratios)} catalog models; off where heads × head_dim ≠ hidden_size or a "
            f"sliding window caps the cache (at 4096 tokens): {listed}")
    return text, "approximate" if off else "holds"


def _bytes_per_param() -> tuple[str, str]:
    from llmlab.memory import weight_bytes
    from llmlab.models import load_spec

    parts = []
    for name in ("llama-3.1-8b", "llama-3.1-70b"):
        spec = load_spec(name)
        row = [f"{p} {weight_bytes(spec, p).total / spec.params:.3f}" for p in ("fp16", "fp8", "int4")]
        parts.append(f"{name}: " + ", ".join(row))
    return "bytes per parameter, everything included (int4 group 128): " + "; ".join(parts), "approximate"


def _margin() -> tuple[str, str]:
    from llmlab.memory import plan

    rows = []
    for context, batch in ((4096, 1), (8192, 16)):
        p = plan("llama-3.1-8b", "fp16", context=context, batch=batch)
        margin = (p.kv_bytes + p.activation_bytes) / p.weight_bytes
        rows.append(f"{batch}×{context} tokens: +{margin:.0%}")
    return "Llama-3.1-8B FP16, KV cache + activations over the weights: " + ", ".join(rows), "wrong"


def _gains() -> tuple[str, str]:
    from llmlab.memory import weight_bytes
    from llmlab.models import load_spec

    spec = load_spec("llama-3.1-8b")
    fp16 = weight_bytes(spec, "fp16").total
    fp8, int4 = (1 - weight_bytes(spec, p).total / fp16 for p in ("fp8", "int4"))
    return (f"Llama-3.1-8B weights: FP8 saves {fp8:.0%}, INT4 (group 128) saves {int4:.0%} of FP16 — less than "
            f"50/75 % because embeddings and lm_head stay 16-bit"), "approximate"


def _guide_row(index: int) -> Callable[[], tuple[str, str]]:
    def measure() -> tuple[str, str]:
        from llmlab.memory import check_guide_table

        check = check_guide_table(context=4096, batch=1)[index]
        return f"at 4096 tokens × 1: {check.reason}", check.verdict

    return measure


def _guide_row_claims() -> list[Claim]:
    from llmlab.memory import guide_table

    return [Claim(f"s2-table-{row.size.lower()}-{row.precisions[0]}", "2",
                  f"{row.size} {row.label} : ~{row.weights_gb:g} Go poids, ~{'-'.join(f'{v:g}' for v in sorted(set(row.total_gb)))} Go total, {row.gpu_text}",
                  f"{row.size} in {row.label}: ~{row.weights_gb:g} GB of weights, ~{'-'.join(f'{v:g}' for v in sorted(set(row.total_gb)))} GB "
                  f"in all with context, runs on {row.gpu_text.replace(' ou ', ' or ').replace('Go', 'GB')}",
                  "the planner at 4096 tokens × 1, on each recommended GPU at vLLM's gpu_memory_utilization 0.9",
                  "03_vram_planning.ipynb", _guide_row(index))
            for index, row in enumerate(guide_table())]


# --------------------------------------------------------------------------------------------------------------
# Chapters 09 and 11: PagedAttention (§1), engines (§4), the decision tree (§5), SLOs and licences (§6), commands (§7)
# --------------------------------------------------------------------------------------------------------------


def _paged_waste() -> tuple[str, str]:
    from llmlab.serving.paged import compare, lifetime_waste, synthetic_trace

    trace = synthetic_trace(4000, "sharegpt", 2048, seed=0)
    result = compare(trace, kv_tokens=32 * 2048, block_size=16, max_model_len=2048)
    pow2, oracle = (lifetime_waste(trace, 16, reservation, 2048)["contiguous"]["waste_fraction"]
                    for reservation in ("pow2", "oracle"))
    alpaca = lifetime_waste(synthetic_trace(4000, "alpaca", 2048, seed=0), 16)["paged"]["waste_fraction"]
    rag = lifetime_waste(synthetic_trace(4000, "rag", 4096, seed=0), 16, "max", 4096)["contiguous"]["waste_fraction"]
    block64 = lifetime_waste(trace, 64)["paged"]["waste_fraction"]
    text = (f"simulated, 4,000 ShareGPT-like requests, max_model_len 2048: contiguous max-length reservation wastes "
            f"{result.contiguous_waste_fraction:.0%}, paged blocks of 16 {result.paged_waste_fraction:.1%}. It depends "
            f"on the baseline and the lengths: reserving the next power of two wastes {pow2:.0%}, the exact length "
            f"{oracle:.0%} before the holes between ranges; long RAG prompts (4k context) waste {rag:.0%} even contiguously; paged waste passes 4 % "
            f"for short Alpaca-like requests ({alpaca:.1%} at block 16) or large blocks ({block64:.1%} at 64)")
    holds = result.paged_waste_fraction < 0.04 and 0.6 <= result.contiguous_waste_fraction <= 0.8
    return text, "approximate" if holds else "wrong"


def _paged_inflight() -> tuple[str, str]:
    from llmlab.serving.paged import compare, synthetic_trace

    result = compare(synthetic_trace(4000, "sharegpt", 2048, seed=0), kv_tokens=32 * 2048, block_size=16,
                     max_model_len=2048)
    paged, contiguous = result.paged, result.contiguous
    text = (f"same 65,536-token pool, 4,000 ShareGPT-like requests: paged runs up to {paged.max_concurrency} requests "
            f"at once ({paged.mean_concurrency:.0f} on average) vs {contiguous.max_concurrency} contiguous, and "
            f"finishes in {paged.steps / contiguous.steps:.0%} of the decode steps (at the price of "
            f"{paged.preemptions:,} preemptions when admission fills the pool)")
    return text, "holds" if paged.mean_concurrency > 2 * contiguous.mean_concurrency else "wrong"


def _engine_flag(flag_id: str) -> Callable[[], tuple[str, str]]:
    def measure() -> tuple[str, str]:
        from llmlab.engines import guide_flag_check, sources_of

        check = guide_flag_check(flag_id)
        return f"{check.finding}; today: {check.instead} (read in {sources_of(check)})", check.verdict

    return measure


def _max_model_len_fits() -> tuple[str, str]:
    from llmlab.engines import guide_flag_check, sources_of, vllm_budget

    check = guide_flag_check("vllm-max-model-len")
    rows = []
    for gpu in ("L4", "A100 80GB", "H100 SXM"):
        budget = vllm_budget("mistral-7b-v0.3", gpu, "fp8", "fp8", max_model_len=16384)
        rows.append(f"{gpu} {budget.max_concurrency:.0f}x")
    return (f"{check.finding}. Mistral-7B-v0.3 in fp8 with an fp8 KV cache at 16,384 tokens fits, with this many "
            f"requests of that length at once (planner, utilization 0.9): {', '.join(rows)} "
            f"(read in {sources_of(check)})"), check.verdict


def _trtllm_features() -> tuple[str, str]:
    from llmlab.engines import FLAG_SOURCES, TRTLLM_QFORMATS

    return (f"quantize.py offers --qformat {', '.join(TRTLLM_QFORMATS.values())} (FP8, SmoothQuant W8A8, AWQ W4A16) "
            f"and --kv_cache_dtype fp8; trtllm-serve schedules requests in flight (capacity scheduler, dynamic batch "
            f"config) (read in {FLAG_SOURCES['trtllm-quantize']}; {FLAG_SOURCES['trtllm-serve']}); FP8 kernels need "
            "compute capability 8.9+ (Ada, Hopper)"), "holds"


def _h100_vs_a100() -> tuple[str, str]:
    from llmlab.engines import vllm_budget
    from llmlab.hardware import gpu
    from llmlab.serving.batching import StepCost, poisson_workload, simulate_continuous

    h100, a100 = gpu("H100 SXM"), gpu("A100 80GB")
    workload = poisson_workload(600, None, "sharegpt", 4096, seed=0)
    throughput = {}
    for device, precision in ((a100, "bf16"), (h100, "bf16"), (h100, "fp8")):
        cost = StepCost.from_plan("llama-3.1-8b", device, precision)
        kv = vllm_budget("llama-3.1-8b", device, precision, max_model_len=4096).kv_tokens
        throughput[(device.name, precision)] = simulate_continuous(workload, cost, kv_tokens=kv).summary()[
            "output_throughput"]
    base = throughput[(a100.name, "bf16")]
    text = (f"datasheet roofline: H100/A100 memory bandwidth x{h100.bandwidth_gb_s / a100.bandwidth_gb_s:.1f}, dense "
            f"compute x{h100.tflops['bf16'] / a100.tflops['bf16']:.1f} in BF16 and x{h100.tflops['fp8'] / a100.tflops['bf16']:.1f} "
            f"FP8 vs A100 BF16. Simulated Llama-3.1-8B, 600 ShareGPT-like requests, up to 256 at once: H100 BF16 "
            f"x{throughput[(h100.name, 'bf16')] / base:.1f}, H100 FP8 x{throughput[(h100.name, 'fp8')] / base:.1f} the "
            "A100 BF16 throughput. 4.6x needs FP8 against 16-bit and batches large enough to be compute-bound: a "
            "vendor best case, not a rule")
    return text, "approximate"


def _trtllm_build_required() -> tuple[str, str]:
    from llmlab.engines import FLAG_SOURCES

    return (f"true of the engine workflow (convert -> trtllm-build -> serve), which TensorRT-LLM now calls legacy: "
            f"trtllm-serve's default backend is pytorch and serves a Hugging Face or ModelOpt-quantized checkpoint "
            f"without a build step (read in {FLAG_SOURCES['trtllm-serve']}; {FLAG_SOURCES['trtllm-legacy']}); CUDA-only "
            "holds"), "approximate"


def _vllm_dynamic() -> tuple[str, str]:
    from llmlab.engines import FLAG_SOURCES, guide_flag_check

    int8 = guide_flag_check("vllm-quantization-int8")
    return (f"dynamic FP8 holds (--quantization fp8 quantizes a 16-bit checkpoint at load time, activations scaled on "
            f"the fly: {FLAG_SOURCES['vllm-fp8']}); dynamic INT8 does not: {int8.finding}"), "approximate"


def _llamacpp_formats() -> tuple[str, str]:
    import gguf

    q8, q4km = gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q4_K_M
    return (f"the gguf package (llama.cpp's own) defines tensor type {q8.name} and file type {q4km.name} among "
            f"{len(gguf.GGMLQuantizationType)} tensor types; the course's embedded model ships as a Q4_1 GGUF and "
            "loads on this CPU"), "holds"


def _h100_70b() -> tuple[str, str]:
    from llmlab.engines import vllm_budget

    budget = vllm_budget("llama-3.1-70b", "H100 SXM", "fp8", "fp8", max_model_len=4096)
    return (f"Llama-3.1-70B in FP8 with an FP8 KV cache fits one H100 at gpu_memory_utilization 0.9 with "
            f"{budget.kv_bytes / GiB:.1f} GiB left for the KV cache: '{budget.log[0]}', '{budget.log[1]}' — it loads "
            "and serves one or two 4k conversations, not a production load; quality is measured in chapter 08"), \
        "approximate"


def _int4_divides_by_4() -> tuple[str, str]:
    from llmlab.memory import plan, weight_bytes
    from llmlab.models import load_spec

    rows = []
    for model in ("llama-3.1-8b", "llama-3.1-70b"):
        spec = load_spec(model)
        ratio = weight_bytes(spec, "fp16").total / weight_bytes(spec, "int4").total
        served = plan(model, "fp16", "fp8", 8192, 16).total_bytes / plan(model, "int4", "fp8", 8192, 16).total_bytes
        rows.append(f"{model} weights ÷{ratio:.1f}, total at 16 x 8k tokens with an FP8 KV cache ÷{served:.1f}")
    return "INT4 (group 128) against FP16: " + "; ".join(rows), "approximate"


def _a100_no_fp8() -> tuple[str, str]:
    from llmlab.hardware import gpu, supports

    a100 = gpu("A100 80GB")
    return (f"A100 (compute capability {a100.capability_text}) has INT8 tensor cores ({a100.tflops['int8']:g} TOPS) and "
            f"no FP8 ones: supports fp8 = {supports(a100, 'fp8')}, int8 = {supports(a100, 'int8')}"), "holds"


def _ttft_slo() -> tuple[str, str]:
    from llmlab.engines import vllm_budget
    from llmlab.serving.batching import StepCost, poisson_workload, simulate_continuous

    p99 = {}
    for label, precision, replicas in (("bf16", "bf16", 1), ("int4", "int4", 1), ("2 replicas", "bf16", 2)):
        cost = StepCost.from_plan("llama-3.1-8b", "A100 80GB", precision)
        kv = vllm_budget("llama-3.1-8b", "A100 80GB", precision, max_model_len=4096).kv_tokens
        workload = poisson_workload(1000, 30 / replicas, "sharegpt", 4096, seed=0)
        p99[label] = simulate_continuous(workload, cost, kv_tokens=kv).summary()["p99_ttft_ms"]
    text = (f"simulated Llama-3.1-8B on one A100 past saturation (30 ShareGPT-like requests/s): TTFT p99 "
            f"{p99['bf16'] / 1e3:.1f} s in BF16; the INT4 profile {p99['int4'] / 1e3:.1f} s (its weights shrink, but "
            f"at 256 running requests the steps are compute-bound and W4A16 computes in 16-bit); two replicas "
            f"{p99['2 replicas']:.0f} ms. The threshold is a sound alert; scale-out is the fix, INT4 barely")
    return text, "approximate"


def _kv_waste_slo() -> tuple[str, str]:
    from llmlab.serving.paged import lifetime_waste, synthetic_trace

    def waste(distribution: str, block: int) -> float:
        return lifetime_waste(synthetic_trace(4000, distribution, 2048, seed=0), block)["paged"]["waste_fraction"]

    long16, short16, short8 = waste("sharegpt", 16), waste("alpaca", 16), waste("alpaca", 8)
    return (f"with paged blocks of 16, ShareGPT-like requests waste {long16:.1%}, well under 8 %, but short Alpaca-like "
            f"ones {short16:.1%}: the alert fires on a correctly paged engine when requests are short against the "
            f"block; blocks of 8 bring it to {short8:.1%} (the setting to check is the block size)"), "approximate"


def _oom_slo() -> tuple[str, str]:
    from llmlab.engines import vllm_budget
    from llmlab.serving.paged import simulate, synthetic_trace

    runs = {}
    for kv_dtype in ("bf16", "fp8"):
        for length in (8192, 4096):
            kv = vllm_budget("llama-3.1-8b", "L4", "bf16", kv_dtype, max_model_len=length).kv_tokens
            runs[(kv_dtype, length)] = (kv, simulate(synthetic_trace(2000, "sharegpt", length, seed=0), kv, "paged",
                                                     16, length))
    (kv16, base), (_, shorter), (kv8, fp8) = runs[("bf16", 8192)], runs[("bf16", 4096)], runs[("fp8", 8192)]
    return (f"a paged engine preempts instead of running out of KV memory. Simulated Llama-3.1-8B on an L4, 2,000 "
            f"ShareGPT-like requests at once: an FP8 KV cache doubles the pool ({kv16:,} -> {kv8:,} tokens), raises "
            f"concurrency {base.max_concurrency} -> {fp8.max_concurrency} and cuts the decode steps by "
            f"{1 - fp8.steps / base.steps:.0%}; halving max_model_len leaves the pool as it is and changes preemptions "
            f"by {shorter.preemptions / base.preemptions - 1:+.0%}"), "approximate"


def _licence_quantization() -> tuple[str, str]:
    from llmlab.licensing import derive, model_names, model_terms

    same = [name for name in model_names()
            if all(derive([name], transform).binding() == model_terms(name).binding()
                   for transform in ("quantize", "convert", "compile"))]
    return (f"for all {len(same)} of {len(model_names())} catalog models, the terms of a quantized, converted (GGUF) or "
            "compiled (TensorRT engine) copy are the parent's, to the obligation"), \
        "holds" if len(same) == len(model_names()) else "wrong"


def _licence_merge() -> tuple[str, str]:
    from llmlab.licensing import check_use, model_terms

    terms = model_terms("luminum-123b")
    allowed, _ = check_use(terms, "commercial-service")
    return (f"Luminum-123B = merge of Mistral-Large-2407 and two of its fine-tunes: bound by {', '.join(terms.licences)}; "
            f"commercial use: {allowed}; redistribution: {terms.redistribution} (parents' licences as the guide states "
            "them, not re-read offline)"), "holds" if allowed == "no" else "wrong"


def _licence_golden_rule() -> tuple[str, str]:
    from llmlab.licensing import check_use, derive

    gguf = derive(["mistral-large-2407"], "convert", "mistral-large-2407-gguf")
    engine = derive(["mistral-large-2407"], "compile", "mistral-large-2407-trt")
    commercial = {check_use(model, "commercial-service")[0] for model in (gguf, engine)}
    scripts = check_use(gguf, "share-scripts")[0]
    return (f"Mistral Large 2407 (MRL) as a GGUF or a TensorRT engine: commercial use {', '.join(sorted(commercial))}; "
            f"sharing the reproduction scripts: {scripts}"), "holds" if commercial == {"no"} and scripts == "yes" \
        else "wrong"


def _serving_claims() -> list[Claim]:
    paged, decisions = "09_paged_attention.ipynb", "11_decisions_slos_licensing.ipynb"
    flags = [("vllm-quantization-fp8", "Pipeline vLLM FP8 : vllm serve … --quantization fp8"),
             ("vllm-kv-cache-dtype-fp8", "--kv-cache-dtype fp8"),
             ("vllm-model-id", "vllm serve mistralai/Mistral-7B-Instruct"),
             ("trtllm-convert-checkpoint", "python examples/llama/convert_checkpoint.py --model_dir … --output_dir … "
                                           "--dtype float16 --tp_size 1"),
             ("trtllm-build-use-fp8", "trtllm-build … --use_fp8 --use_fp8_kv_cache"),
             ("trtllm-build-limits", "trtllm-build … --max_batch_size 16 --max_input_len 8192"),
             ("trtllm-serve-engine-dir", "trtllm-serve --engine_dir /path/to/engine_fp8 --port 8080")]

    def flag_claim(flag_id: str, quote: str, section: str = "7") -> Claim:
        from llmlab.engines import guide_flag_check

        check = guide_flag_check(flag_id)
        return Claim(f"s{section}-{flag_id}", section, quote, f"The command `{check.as_printed}` works as printed.",
                     "the flag against the engine's argument parser and the code behind it (source read, commit named)",
                     decisions, _engine_flag(flag_id))

    return [
        Claim("s1-paged-waste", "1", "PagedAttention … réduit le gaspillage mémoire lié à la fragmentation de 60-80% à "
              "moins de 4%", "PagedAttention cuts KV-cache fragmentation waste from 60-80 % to under 4 %.",
              "llmlab.serving.paged: the same requests and pool with contiguous reservation and with paged blocks, "
              "reserved + internal + external slots over all decode steps", paged, _paged_waste),
        Claim("s1-paged-inflight", "1", "… permettant de maximiser l'in-flight batching.",
              "PagedAttention maximizes in-flight batching.",
              "requests running at once and decode steps, paged vs contiguous, same pool", paged, _paged_inflight),
        Claim("s4-trtllm-features", "4", "TensorRT-LLM : Support FP8 natif sur H100, W8A8, AWQ, in-flight batching.",
              "TensorRT-LLM supports FP8 on H100, W8A8, AWQ and in-flight batching.",
              "TensorRT-LLM's quantize.py formats and trtllm-serve's scheduler (source read)", decisions,
              _trtllm_features),
        Claim("s4-trtllm-h100-4.6x", "4", "jusqu'à 4.6x plus de throughput sur H100 vs A100",
              "TensorRT-LLM delivers up to 4.6x more throughput on H100 than on A100.",
              "datasheet roofline ratios and the continuous-batching simulator on both GPUs", decisions, _h100_vs_a100),
        Claim("s4-trtllm-build", "4", "nécessite une compilation (build engine) préalable",
              "TensorRT-LLM needs an engine build first.", "trtllm-serve's backends (source read)", decisions,
              _trtllm_build_required),
        Claim("s4-vllm-dynamic", "4", "vLLM : support dynamique du FP8/INT8",
              "vLLM quantizes to FP8 and INT8 on the fly.", "vLLM's quantization methods (source read)", decisions,
              _vllm_dynamic),
        Claim("s4-llamacpp-formats", "4", "llama.cpp : Supporte des formats de quantization très granulaires "
              "(Q4_K_M, Q8_0).", "llama.cpp supports fine-grained formats such as Q4_K_M and Q8_0.",
              "the gguf package's type tables", decisions, _llamacpp_formats),
        Claim("s5-h100-70b-fp8", "5", "Permet de faire tenir un 70B sur un seul H100 avec une vitesse foudroyante",
              "FP8 weights and KV cache fit a 70B on one H100.", "vLLM's KV budget from the planner", decisions,
              _h100_70b),
        Claim("s5-a100-no-fp8", "5", "Idéal si le FP8 natif n'est pas supporté (ex: serveurs A100).",
              "A100s have no native FP8 (hence INT8 W8A8 there).", "the GPU catalog", decisions, _a100_no_fp8),
        flag_claim("vllm-quantization-fp8-tree", "Outil : TensorRT-LLM ou vLLM (argument: --quantization fp8).", "5"),
        flag_claim("vllm-quantization-int8", "Outil : vLLM (argument: --quantization int8).", "5"),
        flag_claim("vllm-quantization-awq", "Outil : vLLM (argument: --quantization awq).", "5"),
        Claim("s5-int4-divides-by-4", "5", "INT4 AWQ … Divise les coûts de VRAM par 4.",
              "INT4 AWQ divides VRAM costs by 4.", "weight_bytes and plan, FP16 vs INT4", decisions,
              _int4_divides_by_4),
        Claim("s6-slo-ttft", "6", "Latence (Time To First Token) : p99 > 500ms → Scale-out ou bascule vers profil INT4.",
              "Alert at TTFT p99 > 500 ms; scale out or switch to an INT4 profile.",
              "the continuous-batching simulator past saturation: BF16, INT4, two replicas", decisions, _ttft_slo),
        Claim("s6-slo-kv-waste", "6", "Gaspillage KV-Cache : > 8% → Vérifier configuration PagedAttention.",
              "Alert at KV-cache waste > 8 %; check the PagedAttention configuration.",
              "paged waste of long and short requests at blocks of 16 and 8", decisions, _kv_waste_slo),
        Claim("s6-slo-oom", "6", "Erreurs OOM : > 0.5% des requêtes → Réduire le contexte max ou KV en FP8.",
              "Alert at OOM errors > 0.5 % of requests; reduce the max context or use an FP8 KV cache.",
              "the paged simulator with vLLM's KV budget: FP8 KV cache vs a halved max_model_len", decisions, _oom_slo),
        Claim("s6-licence-quantization", "6", "La quantization … ne modifie en rien la licence source d'un modèle.",
              "Quantization never changes a model's licence.", "llmlab.licensing.derive on every catalog model",
              decisions, _licence_quantization),
        Claim("s6-licence-merge", "6", "Un modèle mergé (ex: Luminum-123B) hérite systématiquement des restrictions de "
              "toutes ses composantes (ex: Mistral MRL + CC-BY-NC).",
              "A merged model inherits every parent's restrictions.", "llmlab.licensing.model_terms on the merge",
              decisions, _licence_merge),
        Claim("s6-licence-golden-rule", "6", "Si l'usage commercial ou la redistribution sont interdits sur le modèle "
              "de base, ils le restent sur le GGUF ou le moteur TensorRT. … partagez uniquement les scripts",
              "What the base model forbids stays forbidden for its GGUF or TensorRT engine; share only the scripts.",
              "llmlab.licensing.check_use on converted and compiled copies of an MRL model", decisions,
              _licence_golden_rule),
        *[flag_claim(flag_id, quote) for flag_id, quote in flags[:2]],
        Claim("s7-vllm-max-model-len", "7", "--max-model-len 16384", "The command `--max-model-len 16384` works as "
              "printed.", "the flag (source read) and the KV budget at that length on three GPUs", decisions,
              _max_model_len_fits),
        *[flag_claim(flag_id, quote) for flag_id, quote in flags[2:]],
    ]


# ---------------------------------------------------------------- §2–3 quantization (chapters 04–08)


def _h100_matrix() -> dict[str, dict]:
    from llmlab.results import load_result

    rows = load_result("quant-matrix-h100")["measurements"]["rows"]
    return {row["method"]: row for row in rows if row["status"] == "ok"}


def _loss(rows: dict, method: str) -> float:
    return rows[method]["perplexity"] / rows["fp16"]["perplexity"] - 1


def _eight_bit_quality() -> tuple[str, str]:
    rows = _h100_matrix()
    methods = ("smoothquant-w8a8", "bnb-int8", "fp8-w8a8", "w8a8-per-token", "w8a8-naive")
    text = ("SmolLM2-135M, perplexity over 16,384 tokens (H100 run) against the 16-bit model: "
            + ", ".join(f"{m} +{_loss(rows, m):.1%}" for m in methods)
            + " — never under 1 % on this small model; per-tensor activations without smoothing are far off")
    return text, "approximate"


def _fp8_doubles_speed() -> tuple[str, str]:
    from llmlab.quant.kernels import speedups
    from llmlab.results import load_result

    gemm = speedups(load_result("quant-gemm-h100")["measurements"]["rows"], "llama-3.1-70b")["fp8"]
    decode = load_result("gpu-decode-h100")["measurements"]["rows"]
    by_kernel = {row["kernel"]: {p["batch"]: p for p in row["decode"]} for row in decode}
    step = by_kernel["fp8"][1]["static_compiled_tokens_per_s"] / by_kernel["bf16"][1]["static_compiled_tokens_per_s"]
    return (f"H100, FP8 over bf16: Llama-3.1-70B layer GEMMs ×{gemm[1]:.2f} at M = 1 (decode), ×{max(gemm.values()):.2f} "
            f"at best (prefill sizes); a whole Llama-3.1-8B decode step (CUDA graphs) ×{step:.2f}"), "wrong"


def _int4_speed_moderate() -> tuple[str, str]:
    from llmlab.quant.kernels import speedups
    from llmlab.results import load_result

    gemm = speedups(load_result("quant-gemm-h100")["measurements"]["rows"], "llama-3.1-70b")["int4"]
    decode = load_result("gpu-decode-h100")["measurements"]["rows"]
    by_kernel = {row["kernel"]: {p["batch"]: p for p in row["decode"]} for row in decode}
    ratio = {b: by_kernel["int4"][b]["static_compiled_tokens_per_s"] / by_kernel["bf16"][b]["static_compiled_tokens_per_s"]
             for b in (1, 16)}
    slower = min(m for m, x in gemm.items() if x < 1)
    ours = load_result("w4a16-triton-h100")["measurements"]["layer_speedups"]["llama-3.1-70b"]["w4a16"]
    whole = {row["kernel"]: {p["batch"]: p["static_compiled_tokens_per_s"] for p in row["decode"]}
             for row in load_result("gpu-decode-w4a16-h100")["measurements"]["rows"]}
    return (f"H100, W4A16 over bf16 with torch's int4 kernel: 70B layer GEMMs ×{gemm[1]:.2f} at M = 1 but slower "
            f"from M = {slower}; a whole 8B decode step ×{ratio[1]:.2f} at batch 1, ×{ratio[16]:.2f} at batch 16. "
            f"With a kernel that dequantizes in registers (ours, Triton): the 70B layer ×{ours['1']:.2f} at M = 1 "
            f"(the byte ratio's ceiling is ×{2 / (0.5 + 2 / 128):.1f}), ×{ours['16']:.2f} at M = 16, a whole 8B "
            f"decode step ×{whole['w4a16'][1] / whole['bf16'][1]:.2f} and "
            f"×{whole['w4a16'][16] / whole['bf16'][16]:.2f}. "
            "Decode is memory-bound: the 4 × fewer bytes set the gain there, and how modest it is depends on the "
            "kernel, not on 4-bit arithmetic (there is none: the weights become 16-bit in registers). The claim holds "
            f"at prefill (compute-bound: ours ×{ours['4096']:.2f} at M = 4096)"), "approximate"


def _int4_quality_measurable() -> tuple[str, str]:
    rows = _h100_matrix()
    methods = ("rtn-w4g64", "awq-w4g64", "gptq-w4g64", "gptq-w4g64-actorder", "bnb-nf4")
    return ("SmolLM2-135M, 4-bit weights (group 64) against 16-bit: "
            + ", ".join(f"{m} +{_loss(rows, m):.0%}" for m in methods)), "holds"


def _smoothquant_stable() -> tuple[str, str]:
    rows = _h100_matrix()
    return (f"W8A8 with per-tensor activations +{_loss(rows, 'w8a8-naive'):.0%} perplexity; per-token "
            f"+{_loss(rows, 'w8a8-per-token'):.1%}; SmoothQuant (α 0.5) +{_loss(rows, 'smoothquant-w8a8'):.1%} "
            f"(llm-compressor's +{_loss(rows, 'llmc-smoothquant-w8a8'):.1%})"), "holds"


def _awq_keeps_fp16() -> tuple[str, str]:
    rows = _h100_matrix()
    same = rows["awq-w4g64"]["weight_bytes"] == rows["rtn-w4g64"]["weight_bytes"]
    return (f"AWQ keeps no weight in FP16: its checkpoint is {'exactly' if same else 'not'} the size of RTN's "
            f"({rows['awq-w4g64']['weight_bytes'] / 1e6:.1f} MB); it scales the ~1 % salient input channels before "
            f"rounding (the paper's FP16 experiment is its motivation, not its method) and still beats RTN: "
            f"+{_loss(rows, 'awq-w4g64'):.0%} vs +{_loss(rows, 'rtn-w4g64'):.0%} perplexity"), "wrong"


def _gptq_compensates() -> tuple[str, str]:
    rows = _h100_matrix()
    return (f"GPTQ against round-to-nearest, same grids: 3-bit +{_loss(rows, 'gptq-w3g64'):.0%} vs "
            f"+{_loss(rows, 'rtn-w3g64'):.0%}; 4-bit +{_loss(rows, 'gptq-w4g64'):.0%} vs +{_loss(rows, 'rtn-w4g64'):.0%} "
            f"(+{_loss(rows, 'gptq-w4g64-actorder'):.0%} with act-order); llm-compressor's GPTQ "
            f"+{_loss(rows, 'llmc-gptq-w4g64'):.0%}. The compensation runs column by column; blocks only batch the "
            "updates (same result, faster)"), "holds"


def _quantization_claims() -> list[Claim]:
    speed = "08_quantization_matrix.ipynb"
    return [
        Claim("s2-8bit-quality", "2", "La perte de qualité (Perplexité) est quasi indétectable (< 1%).",
              "FP8/INT8 costs under 1 % perplexity.", "the quantization matrix on the H100, full budget",
              speed, _eight_bit_quality),
        Claim("s2-fp8-doubles-speed", "2", "Sur un H100, le FP8 double la vitesse d'inférence par rapport au FP16",
              "On an H100, FP8 doubles inference speed over FP16.",
              "FP8 (torch._scaled_mm) vs bf16 GEMMs at Llama layer shapes, and a whole 8B decode step, on an H100",
              speed, _fp8_doubles_speed),
        Claim("s2-int4-speed-moderate", "2", "Le gain de vitesse est modéré car le calcul 4-bit n'est pas toujours "
              "accéléré nativement", "INT4's speed gain is moderate (4-bit compute is not native).",
              "W4A16 (torch's int4 kernel, and ours in Triton) vs bf16 GEMMs and a whole 8B decode step on an H100",
              speed,
              _int4_speed_moderate),
        Claim("s2-int4-quality", "2", "La dégradation qualitative devient mesurable", "INT4's quality loss is measurable.",
              "4-bit methods in the quantization matrix", speed, _int4_quality_measurable),
        Claim("s3-smoothquant-stable", "3", "Permet une inférence 8-bit stable sans ré-entraînement",
              "SmoothQuant makes W8A8 inference stable without retraining.",
              "naive vs per-token vs SmoothQuant W8A8 in the matrix", "05_smoothquant.ipynb", _smoothquant_stable),
        Claim("s3-awq-keeps-1pct-fp16", "3", "Identifie et protège le ~1% des poids les plus critiques (stockés en "
              "FP16), et quantifie les 99% restants en 4 bits.",
              "AWQ keeps ~1 % of weights in FP16 and the rest in 4 bits.",
              "checkpoint bytes of AWQ vs RTN, and perplexity, in the matrix", "06_awq.ipynb", _awq_keeps_fp16),
        Claim("s3-gptq-compensates", "3", "Méthode one-shot utilisant l'approximation Hessienne pour compenser "
              "l'erreur de quantization bloc par bloc.", "GPTQ compensates quantization error block by block "
              "with a Hessian approximation.", "GPTQ vs RTN at 3 and 4 bits in the matrix", "07_gptq.ipynb",
              _gptq_compensates),
    ]


def claims() -> list[Claim]:
    """Every registered claim, in the guide's order."""
    return [
        Claim("s1-activations-minimal", "1", "Activations : … Leur empreinte est généralement minime.",
              "Activations take little memory.",
              "peak CUDA memory of real prefills on an H100 minus weights and KV (stored run)",
              "01_memory_anatomy.ipynb", _activations_minimal),
        Claim("s1-kv-linear", "1", "KV-Cache : … Il croît de manière linéaire avec la longueur du contexte et le nombre de requêtes simultanées.",
              "The KV cache grows linearly with context length and concurrent requests.",
              "kv_cache_bytes over context × batch; real cache tensors of generate() match it to the byte",
              "02_kv_cache.ipynb", _kv_linear),
        Claim("s1-kv-formula", "1", "KV_bytes ≈ batch_size × sequence_length × num_layers × (2 × hidden_size) × (bytes_per_dtype / gqa_factor)",
              "KV bytes ≈ batch × sequence × layers × 2 × hidden × bytes / GQA factor.",
              "the guide's formula against the exact one (2 × layers × kv_heads × head_dim × bytes, window-capped) on every catalog model",
              "02_kv_cache.ipynb", _kv_formula),
        Claim("s2-bytes-per-param", "2", "FP16 : 1 paramètre = 2 octets … FP8 / INT8 : 1 octet … INT4 : 0.5 octet",
              "FP16 = 2 bytes per parameter, FP8/INT8 = 1, INT4 = 0.5.",
              "weight_bytes per format with group scales and the 16-bit embeddings and lm_head, per parameter",
              "01_memory_anatomy.ipynb", _bytes_per_param),
        Claim("s2-margin", "2", "Il faut toujours ajouter une marge de 15% à 20% pour le KV-cache et les activations.",
              "Always add a 15–20 % margin for the KV cache and activations.",
              "the planner's KV + activations over the weights at a short and a long, batched context",
              "03_vram_planning.ipynb", _margin),
        Claim("s2-gains", "2", "Gain VRAM vs FP16 : -50% (FP8/INT8), -75% (INT4)",
              "FP8/INT8 saves 50 % of the VRAM, INT4 75 %.",
              "weight_bytes of Llama-3.1-8B per format against FP16",
              "03_vram_planning.ipynb", _gains),
        *_guide_row_claims(),
        *_quantization_claims(),
        *_serving_claims(),
    ]


def register() -> list[dict]:
    """The register as rows: the claim's fields, its measured value and verdict."""
    rows = []
    for claim in claims():
        measured, verdict = claim.measure()
        if verdict not in VERDICTS:
            raise ValueError(f"claim {claim.id}: verdict {verdict!r} is not one of {VERDICTS}")
        rows.append({"id": claim.id, "section": claim.section, "quote": claim.quote, "claim": claim.claim,
                     "how": claim.how, "measured": measured, "verdict": verdict, "notebook": claim.notebook})
    return rows


def stored_register() -> list[dict]:
    return json.loads((data_dir() / "claims.json").read_text())["claims"]


def claims_markdown(sections: tuple[str, ...] | None = None, ids: tuple[str, ...] | None = None) -> str:
    """The stored register as a Markdown table (the notebooks display it), optionally only some guide sections or
    some claim ids."""
    from llmlab.course import markdown_table

    rows = [{"§": row["section"], "claim": row["claim"], "measured": row["measured"], "verdict": row["verdict"],
             "shown in": row["notebook"]}
            for row in stored_register() if (sections is None or row["section"] in sections)
            and (ids is None or row["id"] in ids)]
    return markdown_table(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Recompute the claims register and write data/claims.json.")
    parser.parse_args(argv)
    rows = register()
    text = json.dumps({"_about": __doc__.split("\n\n")[0].replace("\n", " "), "claims": rows}, indent=1, ensure_ascii=False)
    (data_dir() / "claims.json").write_text(text + "\n")
    for row in rows:
        print(f"{row['id']:28s} {row['verdict']:12s} {row['measured'][:90]}")


if __name__ == "__main__":
    main()
