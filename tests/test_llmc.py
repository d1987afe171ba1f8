"""The llm-compressor path (llmlab.quant.llmc): a run must leave its model to be freed (chapter 08 runs several in one
kernel on Binder's ~2 GB)."""

import gc
import sys
import types
import weakref

import pytest
import torch
from torch.fx import _symbolic_trace

from llmlab.quant.llmc import forget_fx_wraps

pytestmark = pytest.mark.usefixtures("one_thread")

WRAP_F = compile("import torch\ndef f(x):\n    return x\ntorch.fx.wrap('f')\n", "<recompiled forward>", "exec")


def test_forget_fx_wraps_drops_recompiled_namespaces_and_keeps_imported_modules():
    registry = _symbolic_trace._wrapped_fns_to_patch
    layer = torch.nn.Linear(8, 6)
    recompiled = {"__name__": "transformers.models.llama.modeling_llama", "self": layer}  # a copy, as llm-compressor
    imported = types.ModuleType("llmlab_test_imported_in_the_block")  # what `import x` inside the block registers
    sys.modules[imported.__name__] = imported
    try:
        with forget_fx_wraps():
            exec(WRAP_F, recompiled)
            exec(WRAP_F, vars(imported))
            assert (id(recompiled), "f") in registry  # torch.fx keeps the namespace, and with it `self`
        assert (id(recompiled), "f") not in registry, "the recompiled namespace (holding the layer) is still held"
        assert registry.get((id(vars(imported)), "f")) is vars(imported)  # a real module's registration stays
    finally:
        registry.pop((id(vars(imported)), "f"), None)
        del sys.modules[imported.__name__]


@pytest.mark.slow
def test_an_llmcompressor_run_leaves_its_model_to_be_freed(embedded):
    from llmlab.data import calibration_batches
    from llmlab.quant.llmc import llmc_smoothquant
    from llmlab.zoo import load_model

    model, _, _ = load_model()
    llmc_smoothquant(model, calibration_batches(embedded[1], 1, 64))  # the sequential pipeline: recompiled forwards
    alive = weakref.ref(model)
    del model
    gc.collect()  # llm-compressor leaves the model in reference cycles (wrapped forwards): only the collector frees it
    assert alive() is None, [type(r).__name__ for r in gc.get_referrers(alive())]  # observed None; before: held by
    # torch.fx's _wrapped_fns_to_patch, 0.5 GB per run (2.86 GB peak for chapter 08, 2026-11)
