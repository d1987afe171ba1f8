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


def claims_markdown(sections: tuple[str, ...] | None = None) -> str:
    """The stored register as a Markdown table (the notebooks display it), optionally only some guide sections."""
    from llmlab.course import markdown_table

    rows = [{"§": row["section"], "claim": row["claim"], "measured": row["measured"], "verdict": row["verdict"],
             "shown in": row["notebook"]}
            for row in stored_register() if sections is None or row["section"] in sections]
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
