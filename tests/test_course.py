"""setup_notebook: the budget it returns and the one-thread rule of the quantization chapters."""

import torch

from llmlab import course
from llmlab.course import setup_notebook


def test_setup_notebook_returns_the_budget(monkeypatch):
    monkeypatch.setenv("LLMLAB_BUDGET", "small")
    assert setup_notebook() == "small"


def test_small_ops_use_one_thread_on_a_small_cpu_only(monkeypatch):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(course.os, "cpu_count", lambda: 16)
        setup_notebook(small_ops=True)
        assert torch.get_num_threads() == 2, torch.get_num_threads()  # a large machine keeps its threads
        monkeypatch.setattr(course.os, "cpu_count", lambda: 2)
        setup_notebook()
        assert torch.get_num_threads() == 2, torch.get_num_threads()  # chapters without many small ops too
        setup_notebook(small_ops=True)
        assert torch.get_num_threads() == 1, torch.get_num_threads()  # expected 1 on a 2-core machine
    finally:
        torch.set_num_threads(threads)
