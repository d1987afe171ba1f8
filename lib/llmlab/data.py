"""Calibration and evaluation text, offline by default.

Offline (the default): CPython's `pydoc_data.topics` (~465k characters of English technical prose, PSF licence),
stored in `data/text/pydoc_topics.json.gz` so every machine (Python 3.11 here, 3.12 on the GPU) reads the same
bytes. Repeated paragraphs are kept once; the rest is cut into blocks of whole paragraphs; every fifth block goes to evaluation, the rest to calibration, so
the two sets are disjoint and the split never changes.

Online: WikiText-2 (test split for evaluation, train for calibration) and C4, through `datasets`, as the GPTQ and AWQ
papers use them.
"""

from __future__ import annotations

import functools
import gzip
import json
from typing import TYPE_CHECKING

from llmlab.paths import data_dir

if TYPE_CHECKING:
    import torch

BLOCK_CHARS = 4000  # paragraphs are grouped into blocks of about this many characters
EVAL_EVERY = 5  # every fifth block is evaluation text, the other four calibration text
SOURCES = ("offline", "wikitext2", "c4")


@functools.lru_cache(maxsize=1)
def offline_topics() -> dict[str, str]:
    """The stored `pydoc_data.topics` dictionary: topic name -> text."""
    with gzip.open(data_dir() / "text" / "pydoc_topics.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)["topics"]


@functools.lru_cache(maxsize=1)
def _offline_split() -> tuple[str, str]:
    # the topics repeat some paragraphs (footnotes, shared sections): keep each paragraph once, so that no
    # evaluation paragraph is also seen in calibration
    paragraphs = list(dict.fromkeys(
        paragraph.strip()
        for name in sorted(offline_topics())
        for paragraph in offline_topics()[name].split("\n\n")
        if paragraph.strip()
    ))
    blocks, current = [], []
    for paragraph in paragraphs:
        current.append(paragraph)
        if sum(len(p) for p in current) >= BLOCK_CHARS:
            blocks.append("\n\n".join(current))
            current = []
    if current:
        blocks.append("\n\n".join(current))
    evaluation = [block for index, block in enumerate(blocks) if index % EVAL_EVERY == EVAL_EVERY - 1]
    calibration = [block for index, block in enumerate(blocks) if index % EVAL_EVERY != EVAL_EVERY - 1]
    return "\n\n".join(calibration), "\n\n".join(evaluation)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown text source {source!r}; choose one of {', '.join(SOURCES)}")


def _online_text(source: str, split: str) -> str:
    try:
        import datasets
    except ImportError as error:
        raise RuntimeError(f"text source {source!r} needs `pip install datasets` and internet; use source='offline'") from error
    try:
        if source == "wikitext2":
            rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test" if split == "evaluation" else "train")
            return "\n\n".join(rows["text"])
        shard = "en/c4-validation.00000-of-00008.json.gz" if split == "evaluation" else "en/c4-train.00000-of-01024.json.gz"
        rows = datasets.load_dataset("allenai/c4", data_files={"x": shard}, split="x")
        return "\n\n".join(rows["text"][:3000])
    except Exception as error:  # the hub is unreachable or the dataset moved
        raise RuntimeError(f"could not load {source!r} ({type(error).__name__}); offline? use source='offline'") from error


def calibration_text(source: str = "offline") -> str:
    """Text to calibrate quantizers on; never overlaps `evaluation_text(source)`."""
    _check_source(source)
    return _offline_split()[0] if source == "offline" else _online_text(source, "calibration")


def evaluation_text(source: str = "offline") -> str:
    """Text to measure perplexity on; never overlaps `calibration_text(source)`."""
    _check_source(source)
    return _offline_split()[1] if source == "offline" else _online_text(source, "evaluation")


def calibration_batches(tokenizer, n_samples: int = 32, seq_len: int = 512, seed: int = 0, source: str = "offline") -> "torch.Tensor":
    """`n_samples` random windows of `seq_len` tokens from the calibration text, as GPTQ draws them: [n_samples, seq_len]."""
    import torch

    if n_samples <= 0 or seq_len <= 0:
        raise ValueError(f"n_samples and seq_len must be positive, got {n_samples} and {seq_len}")
    ids = tokenizer(calibration_text(source), return_tensors="pt").input_ids[0]  # [n_tokens]
    if ids.numel() <= seq_len:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}; use a shorter seq_len")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=generator)
    return torch.stack([ids[start : start + seq_len] for start in starts.tolist()])  # [n_samples, seq_len]


def evaluation_ids(tokenizer, n_tokens: int = 16384, source: str = "offline") -> "torch.Tensor":
    """The first `n_tokens` tokens of the evaluation text: [1, n_tokens]."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    ids = tokenizer(evaluation_text(source), return_tensors="pt").input_ids  # [1, total]
    if ids.shape[1] < n_tokens:
        raise ValueError(f"evaluation text has only {ids.shape[1]} tokens; ask for at most that many, not {n_tokens}")
    return ids[:, :n_tokens]
