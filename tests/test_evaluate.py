"""The evaluator: perplexity over non-overlapping windows equals transformers' own loss, weight bytes count tied
tensors once, packed sizes follow bits + scales, generation is reproducible, memory and latency helpers measure."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmlab.evaluate import (
    generate_sample,
    measure_latency,
    packed_weight_bytes,
    perplexity,
    weight_bytes_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest: 2 threads stall on a shared CPU


class UniformModel(torch.nn.Module):
    """Predicts every token with equal probability: its perplexity is the vocabulary size. Records its inputs."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, ids, use_cache=False):
        self.seen.append(ids.clone())
        return SimpleNamespace(logits=torch.zeros(*ids.shape, self.vocab))


def tiny_llama(tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    return LlamaForCausalLM(config).eval()


def test_uniform_predictions_have_the_vocabulary_as_perplexity_and_windows_do_not_overlap():
    model = UniformModel(vocab=50)
    ids = torch.arange(1000).remainder(50)[None]  # [1, 1000]
    assert perplexity(model, ids, seq_len=256, batch_size=2) == pytest.approx(50.0)
    windows = torch.cat(model.seen)  # 3 full windows; the last 232 tokens are dropped, as in the GPTQ paper
    assert windows.shape == (3, 256) and torch.equal(windows.reshape(-1), ids[0, :768])


def test_perplexity_equals_transformers_loss_on_each_window():
    model = tiny_llama()
    ids = torch.randint(0, 128, (1, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        losses = [model(window[None], labels=window[None]).loss for window in ids[0].split(32)]
    expected = math.exp(torch.stack(losses).mean().item())  # equal-length windows: mean of means = overall mean
    assert perplexity(model, ids, seq_len=32) == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, ids, seq_len=32, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_too_few_tokens_are_refused():
    with pytest.raises(ValueError, match="at least seq_len=512 tokens, got 100"):
        perplexity(UniformModel(), torch.zeros(1, 100, dtype=torch.long))


def test_weight_bytes_count_tied_embeddings_once():
    tied, untied = tiny_llama(tie=True), tiny_llama(tie=False)
    embedding = 128 * 32 * 4  # float32
    assert weight_bytes_of(untied) - weight_bytes_of(tied) == embedding
    assert weight_bytes_of(untied) == sum(p.numel() for p in untied.parameters()) * 4


def test_packed_bytes_are_bits_plus_one_scale_per_group():
    model = tiny_llama()
    names = ["model.layers.0.mlp.down_proj"]  # [32, 64]
    others = sum(p.numel() for p in model.parameters()) - 32 * 64
    # 4 bits a weight + a 2-byte scale for each of 32 rows x 2 groups + every other parameter at 2 bytes
    assert packed_weight_bytes(model, names, 4, 32) == 32 * 64 // 2 + 32 * 2 * 2 + others * 2
    # one group per row, with a scale and a zero point
    assert packed_weight_bytes(model, names, 3, None, zero_point=True) == 32 * 64 * 3 // 8 + 32 * (2 + 2) + others * 2
    with pytest.raises(ValueError, match="no modules named"):
        packed_weight_bytes(model, ["model.layers.9.mlp"], 4, 32)


def test_generation_is_reproducible_for_a_seed():
    model = tiny_llama()
    model.generation_config.eos_token_id = None  # never stop early: always 8 new tokens

    class Tokenizer:
        eos_token_id = 0

        def __call__(self, text, return_tensors="pt"):
            return SimpleNamespace(input_ids=torch.tensor([[ord(c) % 128 for c in text]]))

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids.tolist()))

    sampled = [generate_sample(model, Tokenizer(), "hello", max_new_tokens=8, seed=3, temperature=1.0)
               for _ in range(2)]
    assert sampled[0] == sampled[1] and len(sampled[0].split()) == 8
    greedy = generate_sample(model, Tokenizer(), "hello", max_new_tokens=8)
    assert greedy == generate_sample(model, Tokenizer(), "hello", max_new_tokens=8, seed=99)  # greedy ignores seed


def test_latency_reports_positive_speeds():
    latency = measure_latency(tiny_llama(), torch.randint(0, 128, (1, 16)), new_tokens=8, repeats=1)
    assert latency.prompt_tokens == 16 and latency.new_tokens == 8 and latency.device == "cpu"
    assert latency.time_to_first_token_s > 0 and latency.decode_tokens_per_s > 0
    with pytest.raises(ValueError, match="at least 2"):
        measure_latency(tiny_llama(), torch.randint(0, 128, (1, 4)), new_tokens=1)


@pytest.mark.slow
def test_embedded_model_perplexity_and_sample(embedded):
    from llmlab.data import evaluation_ids

    model, tokenizer, _ = embedded
    ppl = perplexity(model, evaluation_ids(tokenizer, 2048))
    assert 10 < ppl < 17, ppl  # observed 13.74 on the first 2048 evaluation tokens (2026-11)
    assert "Paris" in generate_sample(model, tokenizer, "The capital of France is", max_new_tokens=5)
