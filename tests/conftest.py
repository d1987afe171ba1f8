"""Shared fixtures: the embedded model is loaded once per test session (about a second from the cache)."""

import pytest


@pytest.fixture(scope="session")
def embedded():
    from llmlab.zoo import load_model

    model, tokenizer, report = load_model()
    return model, tokenizer, report
