"""Architecture knowledge as data: where the decoder layers are, which linears a layer holds and in which order they
run, and which module's output each linear reads (norm -> linears, v -> o, up -> down), keyed by `config.model_type`.

GPTQ uses `sequential` (the linears of one layer, grouped by the input they share, in forward order); SmoothQuant and
AWQ use `balance` (scales folded into the producer and undone in the consumers). The same table shape as
llm-compressor's mappings (`modifiers/awq/mappings.py`, `modifiers/smoothquant/utils.py`), written out per family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ArchitectureMapping:
    """Where a family keeps its decoder layers and how the linears inside one layer connect."""

    layers: str  # attribute path from the *ForCausalLM model to the list of decoder layers
    sequential: tuple[tuple[str, ...], ...]  # linears of a layer grouped by shared input, in forward order
    balance: tuple[tuple[str, tuple[str, ...]], ...]  # (producer: a norm or linear, the linears that read its output)
    keep: tuple[str, ...] = ("lm_head",)  # top-level modules never quantized (embeddings are not Linear anyway)


# Llama-style block: RMSNorm -> q, k, v -> attention -> o; RMSNorm -> gate, up -> act(gate) * up -> down
_ATTENTION_MLP = ArchitectureMapping(
    layers="model.layers",
    sequential=(
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),  # read input_layernorm's output
        ("self_attn.o_proj",),  # reads the attention output
        ("mlp.gate_proj", "mlp.up_proj"),  # read post_attention_layernorm's output
        ("mlp.down_proj",),  # reads act(gate) * up
    ),
    balance=(
        ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        # v -> o only where v's outputs are o's inputs one to one: without GQA (v.out_features == o.in_features);
        # `balance_pairs` drops it otherwise (SmolLM2: v gives 3 KV heads = 192, o reads 9 heads = 576)
        ("self_attn.v_proj", ("self_attn.o_proj",)),
        ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
        ("mlp.up_proj", ("mlp.down_proj",)),  # act(gate) * up is linear in up's output channels
    ),
)

MAPPINGS: dict[str, ArchitectureMapping] = {  # config.model_type -> mapping
    "llama": _ATTENTION_MLP,  # Llama 2/3, SmolLM2, TinyLlama
    "mistral": _ATTENTION_MLP,  # Mistral 7B, Ministral (sliding window changes nothing here)
    "qwen2": _ATTENTION_MLP,  # Qwen2 / Qwen2.5 (q, k, v carry biases: still the same wiring)
    "qwen3": _ATTENTION_MLP,  # Qwen3 dense (q_norm, k_norm act per head after q, k: the wiring above still holds)
}


def mapping_for(model) -> ArchitectureMapping:
    """The mapping for `model.config.model_type`; LookupError naming the known families otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MAPPINGS:
        raise LookupError(f"no layer mapping for model_type {model_type!r}; known: {', '.join(sorted(MAPPINGS))} "
                          "(add an entry to llmlab.quant.mappings.MAPPINGS)")
    return MAPPINGS[model_type]


def decoder_layers(model, mapping: ArchitectureMapping | None = None) -> torch.nn.ModuleList:
    """The model's list of decoder layers."""
    return model.get_submodule((mapping or mapping_for(model)).layers)


def layer_linears(layer: torch.nn.Module, mapping: ArchitectureMapping) -> dict[str, torch.nn.Linear]:
    """Name -> Linear for every linear `mapping.sequential` lists, in forward order."""
    return {name: layer.get_submodule(name) for group in mapping.sequential for name in group}


def quantizable_linears(model, mapping: ArchitectureMapping | None = None) -> dict[str, torch.nn.Linear]:
    """Full module name -> Linear for every linear inside the decoder layers (the ones weight quantizers touch)."""
    mapping = mapping or mapping_for(model)
    return {f"{mapping.layers}.{index}.{name}": linear
            for index, layer in enumerate(decoder_layers(model, mapping))
            for name, linear in layer_linears(layer, mapping).items()}


def balance_pairs(layer: torch.nn.Module, mapping: ArchitectureMapping) -> list[tuple[str, tuple[str, ...]]]:
    """`mapping.balance` restricted to the pairs this layer's shapes allow (the producer's outputs are exactly the
    consumers' inputs): drops v -> o under grouped-query attention."""
    pairs = []
    for producer, consumers in mapping.balance:
        module = layer.get_submodule(producer)
        width = module.out_features if isinstance(module, torch.nn.Linear) else module.weight.shape[0]
        if all(layer.get_submodule(name).in_features == width for name in consumers):
            pairs.append((producer, consumers))
    return pairs
