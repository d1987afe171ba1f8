"""The offline text: deterministic, disjoint calibration and evaluation sets, windows of the right shape."""

import pytest
import torch

from llmlab.data import calibration_batches, calibration_text, evaluation_ids, evaluation_text, offline_topics


def test_offline_corpus_is_the_stored_pydoc_topics():
    topics = offline_topics()
    total = sum(len(text) for text in topics.values())
    assert len(topics) == 79, len(topics)  # CPython 3.11.7's pydoc_data.topics
    assert 450_000 < total < 480_000, total  # observed 464,970 characters


def test_calibration_and_evaluation_are_disjoint_and_cover_the_text():
    calibration, evaluation = calibration_text(), evaluation_text()
    calibration_blocks = set(calibration.split("\n\n"))
    evaluation_blocks = set(evaluation.split("\n\n"))
    shared = {block for block in calibration_blocks & evaluation_blocks if len(block) > 80}
    assert not shared, f"{len(shared)} paragraphs appear in both sets, e.g. {next(iter(shared))[:60]!r}"
    fraction = len(evaluation) / (len(calibration) + len(evaluation))
    assert 0.15 < fraction < 0.25, fraction  # every fifth block: observed 0.194


def test_split_is_deterministic():
    assert calibration_text() == calibration_text() and evaluation_text()[:1000] == evaluation_text()[:1000]


def test_unknown_source_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="offline, wikitext2, c4"):
        calibration_text("pile")


@pytest.mark.slow
def test_token_windows(embedded):
    _, tokenizer, _ = embedded
    batches = calibration_batches(tokenizer, n_samples=4, seq_len=128, seed=0)
    again = calibration_batches(tokenizer, n_samples=4, seq_len=128, seed=0)
    assert batches.shape == (4, 128), batches.shape
    assert torch.equal(batches, again)
    ids = evaluation_ids(tokenizer, n_tokens=16384)
    assert ids.shape == (1, 16384), ids.shape  # the evaluation text holds about 22k tokens
    with pytest.raises(ValueError, match="only"):
        evaluation_ids(tokenizer, n_tokens=10**7)
    with pytest.raises(ValueError, match="positive"):
        calibration_batches(tokenizer, n_samples=0)
