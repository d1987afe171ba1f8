"""Shared fixtures: the embedded model is loaded once per test session (about a second from the cache)."""

import pytest


@pytest.fixture(scope="session")
def embedded():
    from llmlab.zoo import load_model

    model, tokenizer, report = load_model()
    return model, tokenizer, report


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a shared 2-core
    machine two threads wait on each other at every op (a 1024-token perplexity took 3-6 s with one, 12 s with two)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
