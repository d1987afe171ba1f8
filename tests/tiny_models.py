"""Tiny random-weight models the quantization tests share (built in milliseconds, no files)."""

import torch


def tiny_llama(seed: int = 0):
    """A 2-layer Llama with GQA (4 heads, 2 KV heads), random weights: the model-walking code on a small scale."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def tiny_llama_with_outliers(seed: int = 0):
    """The same, with an outlier channel in every norm's output (channel 7, 30x), as in real LLMs."""
    model = tiny_llama(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.uniform_(0.5, 1.5)
                norm.weight[7] = 30.0
    return model
