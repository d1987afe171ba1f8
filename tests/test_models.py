"""llmlab.models: the analytic parameter count equals transformers' meta-device model, exactly, family by family;
the catalog configs reproduce the published totals; the spec's fields follow the config; refusals say what to do."""

import json

import pytest

from llmlab.models import FAMILIES, catalog_names, count_parameters_meta, load_spec

# Small versions of each family's config: the same fields as the published ones, 2-4 layers, narrow widths,
# so the meta-device model builds in milliseconds. Each exercises what makes its family different.
SMALL = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)
SMALL_CONFIGS = {
    "llama-untied": dict(SMALL, model_type="llama", tie_word_embeddings=False),
    "llama-tied": dict(SMALL, model_type="llama", tie_word_embeddings=True),
    "llama-biases": dict(SMALL, model_type="llama", attention_bias=True, mlp_bias=True),
    "llama-head-dim": dict(SMALL, model_type="llama", head_dim=32),  # like Llama-3.2: explicit head_dim
    "mistral-sliding": dict(SMALL, model_type="mistral", sliding_window=16),
    "qwen2-qkv-bias": dict(SMALL, model_type="qwen2", tie_word_embeddings=True),
    "qwen3-qk-norm": dict(SMALL, model_type="qwen3", head_dim=32),  # head_dim 32 != 64 / 4
    "gemma": dict(SMALL, model_type="gemma", head_dim=32),
    "gemma2": dict(SMALL, model_type="gemma2", hidden_size=56, head_dim=32, num_hidden_layers=4),  # 4*32 != 56
    "gemma3_text": dict(SMALL, model_type="gemma3_text", head_dim=32, num_hidden_layers=6),
    "phi3-fused": dict(SMALL, model_type="phi3", vocab_size=32064),  # its default pad id 32000 must fit
    "mixtral": dict(SMALL, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe-shared": dict(SMALL, model_type="qwen2_moe", num_experts=8, num_experts_per_tok=2,
                             moe_intermediate_size=32, shared_expert_intermediate_size=96, num_hidden_layers=4,
                             decoder_sparse_step=2),
    "qwen3_moe-dense-layer": dict(SMALL, model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2,
                                  moe_intermediate_size=32, head_dim=32, num_hidden_layers=3, mlp_only_layers=[0]),
}

# Totals published for the real models (hub model pages, safetensors metadata): these also prove the catalog configs.
PUBLISHED_TOTALS = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "mistral-7b-v0.3": 7_248_023_552,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-7b": 7_615_616_512,
    "smollm2-135m": 134_515_008,
}

REQUIRED_CATALOG = ("llama-3.1-8b", "llama-3.1-70b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b-v0.3",
                    "mixtral-8x7b", "qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-72b", "qwen3-8b", "qwen3-30b-a3b",
                    "gemma-2-9b", "phi-3-mini-4k", "smollm2-135m")


@pytest.mark.parametrize("key", SMALL_CONFIGS)
def test_analytic_count_equals_meta_device_model(key):
    config = SMALL_CONFIGS[key]
    spec = load_spec(config)
    assert spec.count_method == "analytic"
    assert (spec.params, spec.active_params) == count_parameters_meta(config)  # exact, every family
    assert sum(spec.breakdown.values()) == spec.params


def test_every_family_in_the_table_is_checked():
    checked = {config["model_type"] for config in SMALL_CONFIGS.values()}
    assert checked == set(FAMILIES)


def test_catalog_holds_the_required_models():
    assert set(REQUIRED_CATALOG) <= set(catalog_names())


@pytest.mark.parametrize("name", catalog_names())
def test_catalog_count_equals_meta_device_model(name):
    spec = load_spec(name)
    assert (spec.params, spec.active_params) == count_parameters_meta(spec.config)  # full size, still < 0.3 s


@pytest.mark.parametrize("name, total", PUBLISHED_TOTALS.items())
def test_published_totals(name, total):
    assert load_spec(name).params == total


def test_moe_active_parameters():
    mixtral = load_spec("mixtral-8x7b")
    # non-expert 1,605,636,096 + 2/8 of 45,097,156,608 routed: the "12.9B active" of Mistral's announcement
    assert mixtral.active_params == 12_879_925_248
    assert (mixtral.num_experts, mixtral.num_experts_per_token, mixtral.num_moe_layers) == (8, 2, 32)
    qwen3_moe = load_spec("qwen3-30b-a3b")
    assert qwen3_moe.params == 30_532_122_624  # the model card says "30.5B"
    assert qwen3_moe.active_params == 3_353_032_704  # the model card says "3.3B activated"
    assert qwen3_moe.expert_intermediate_size == 768


def test_shared_expert_is_always_active():
    spec = load_spec(SMALL_CONFIGS["qwen2_moe-shared"])
    routed = spec.breakdown["experts"]
    assert spec.num_moe_layers == 2  # decoder_sparse_step 2 over 4 layers
    assert spec.active_params == spec.params - routed + routed * 2 // 8
    assert spec.breakdown["shared_expert"] == 2 * 3 * 64 * 96
    assert spec.breakdown["router"] == 2 * (8 * 64 + 64)  # router [E, d] + shared_expert_gate [1, d] per MoE layer


def test_dense_model_active_equals_total():
    spec = load_spec("llama-3.1-8b")
    assert spec.active_params == spec.params
    assert (spec.num_experts, spec.num_experts_per_token) == (0, 0)


def test_gemma2_fields():
    spec = load_spec("gemma-2-9b")
    assert (spec.head_dim, spec.hidden_size, spec.num_attention_heads) == (256, 3584, 16)  # 16*256 = 4096 != 3584
    q_proj = next(linear for linear in spec.quantizable_linears if linear.name == "self_attn.q_proj")
    assert (q_proj.out_features, q_proj.in_features, q_proj.count) == (4096, 3584, 42)
    assert (spec.sliding_window, spec.num_sliding_layers) == (4096, 21)  # every other layer of 42
    assert spec.tie_word_embeddings and spec.lm_head_params == 0
    assert spec.params == 9_241_705_984  # = the meta-device count; the model card rounds it to "9B"


def test_sliding_window_layouts():
    mistral_v01 = dict(load_spec("mistral-7b-v0.3").config, sliding_window=4096, vocab_size=32000)
    spec = load_spec(mistral_v01)
    assert (spec.sliding_window, spec.num_sliding_layers) == (4096, 32)  # Mistral-7B-v0.1: every layer
    assert spec.params == 7_241_732_096  # Mistral-7B-v0.1 (32000-token vocabulary): v0.3 less 768 rows x 2
    assert (load_spec("mistral-7b-v0.3").sliding_window, load_spec("mistral-7b-v0.3").num_sliding_layers) == (None, 0)
    # Qwen2.5 configs carry sliding_window but use_sliding_window is false: no layer uses it
    assert (load_spec("qwen2.5-7b").sliding_window, load_spec("qwen2.5-7b").num_sliding_layers) == (None, 0)
    qwen_window = dict(load_spec("qwen2.5-7b").config, use_sliding_window=True, max_window_layers=20)
    assert load_spec(qwen_window).num_sliding_layers == 8  # layers 20..27
    assert (load_spec("phi-3-mini-4k").sliding_window, load_spec("phi-3-mini-4k").num_sliding_layers) == (2047, 32)


def test_phi3_fused_linears_count_the_same():
    spec = load_spec("phi-3-mini-4k")
    names = [linear.name for linear in spec.quantizable_linears]
    assert names == ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"]
    qkv = spec.quantizable_linears[0]
    assert (qkv.out_features, qkv.in_features) == (3 * 3072, 3072)
    assert spec.params == 3_821_079_552  # = the meta-device count; the model card says "3.8B"


def test_qwen2_biases_are_kept_not_quantized():
    spec = load_spec("qwen2.5-0.5b")
    q_proj = spec.quantizable_linears[0]
    assert q_proj.name == "self_attn.q_proj" and q_proj.bias
    biases = 24 * (896 + 128 + 128)  # q, k, v biases of 24 layers; o_proj has none
    norms = 24 * 2 * 896 + 896
    assert spec.kept_params == spec.embedding_params + norms + biases  # tied: no separate lm_head
    assert spec.params == 494_032_768  # = the meta-device count; the model card says "0.49B"


def test_spec_fields_and_helpers():
    spec = load_spec("llama-3.1-70b")
    assert (spec.num_layers, spec.num_kv_heads, spec.gqa_factor, spec.head_dim) == (80, 8, 8, 128)
    assert spec.embedding_params == spec.lm_head_params == 128256 * 8192
    assert spec.quantizable_params == 80 * (2 * 8192 * 8192 + 2 * 1024 * 8192 + 3 * 8192 * 28672)
    assert spec.kept_params == 2 * 128256 * 8192 + 80 * 2 * 8192 + 8192
    assert spec.max_position_embeddings == 131072
    assert spec.non_embedding_params == spec.params - 2 * 128256 * 8192


def test_missing_kv_heads_means_multi_head_attention():
    config = {key: value for key, value in SMALL_CONFIGS["qwen2-qkv-bias"].items() if key != "num_key_value_heads"}
    spec = load_spec(config)  # Qwen2Config would default to 32 KV heads; the convention is MHA
    assert (spec.num_kv_heads, spec.gqa_factor) == (4, 1)
    assert spec.params == count_parameters_meta(config)[0]


def test_missing_head_dim_means_hidden_over_heads():
    config = {key: value for key, value in SMALL_CONFIGS["qwen3-qk-norm"].items() if key != "head_dim"}
    spec = load_spec(config)  # Qwen3Config would default to 128; the convention is hidden_size // heads
    assert spec.head_dim == 16
    assert spec.params == count_parameters_meta(config)[0]


def test_names_match_case_insensitively():
    assert load_spec("Llama-3.1-8B").name == "llama-3.1-8b"
    assert load_spec("SMOLLM2-135M").params == 134_515_008
    assert load_spec("qwen3-8b", name="my-qwen").name == "my-qwen"


def test_unknown_name_lists_closest_catalog_names():
    with pytest.raises(LookupError, match="llama-3.1-8b"):
        load_spec("llama-3.1-8")


def test_missing_field_is_named():
    config = {key: value for key, value in SMALL_CONFIGS["llama-tied"].items() if key != "hidden_size"}
    with pytest.raises(ValueError, match="'hidden_size'"):
        load_spec(config)
    with pytest.raises(ValueError, match="'model_type'"):
        load_spec({"hidden_size": 64})
    moe = {key: value for key, value in SMALL_CONFIGS["mixtral"].items() if key != "num_local_experts"}
    with pytest.raises(ValueError, match="'num_local_experts'"):
        load_spec(moe)


def test_multimodal_config_points_at_text_config():
    with pytest.raises(ValueError, match="text_config"):
        load_spec({"model_type": "llama", "text_config": {"hidden_size": 64}})


def test_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="unknown to transformers"):
        load_spec(dict(SMALL, model_type="not-a-model"))


def test_missing_path_is_not_taken_for_a_hub_id():
    with pytest.raises(ValueError, match="no file at"):
        load_spec("configs/not-there.json")


def test_paths_file_and_folder(tmp_path):
    config = SMALL_CONFIGS["gemma2"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_folder, from_file = load_spec(tmp_path), load_spec(str(tmp_path / "config.json"))
    assert from_folder.params == from_file.params == load_spec(config).params
    assert from_folder.name == str(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_spec(empty)


def test_hub_id_offline_says_what_to_do(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)  # the real call retries for ~25 s offline
    with pytest.raises(LookupError, match="offline.*catalog name"):
        load_spec("Qwen/Qwen2.5-0.5B")


def test_hub_id_reads_the_downloaded_config(monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIGS["qwen2-qkv-bias"]))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename: str(tmp_path / filename))
    spec = load_spec("someone/tiny-qwen2")
    assert spec.name == "someone/tiny-qwen2" and spec.count_method == "analytic"


@pytest.mark.parametrize("config", [
    dict(model_type="gpt2", vocab_size=1000, n_embd=64, n_layer=2, n_head=4),  # Conv1D, aliased field names
    dict(SMALL, model_type="olmo2"),  # q/k norms over all heads, post-norms: not in FAMILIES
])
def test_unknown_family_falls_back_to_meta_count(config):
    spec = load_spec(config)
    assert spec.count_method == "meta"
    assert (spec.params, spec.active_params) == count_parameters_meta(config)
    assert spec.quantizable_params + spec.kept_params == spec.params
    assert spec.num_layers == 2 and spec.hidden_size == 64


def test_meta_linears_match_the_analytic_ones():
    from llmlab.models import _meta_linears, _meta_model, _transformers_config

    for key in ("llama-biases", "qwen3-qk-norm", "phi3-fused"):
        config = SMALL_CONFIGS[key]
        model = _meta_model(_transformers_config(config, ()))
        by_name = lambda linears: sorted(linears, key=lambda linear: linear.name)  # noqa: E731
        assert by_name(_meta_linears(model)) == by_name(load_spec(config).quantizable_linears), key
    moe = SMALL_CONFIGS["qwen2_moe-shared"]  # transformers stacks gate and up of the experts: same numbers
    meta_weights = sum(linear.weight_params for linear in _meta_linears(_meta_model(_transformers_config(moe, ()))))
    assert meta_weights == load_spec(moe).quantizable_params


@pytest.mark.slow
def test_embedded_model_count_equals_loaded_model():
    import torch

    from llmlab.zoo import embedded_cache, load_model

    model, _, _ = load_model()
    loaded = sum(parameter.numel() for parameter in model.parameters())
    spec = load_spec(embedded_cache())
    assert spec.params == loaded == 134_515_008  # SmolLM2-135M-Instruct, tied embeddings
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim, spec.gqa_factor) == (30, 3, 64, 3)
    quantizable = sum(module.weight.numel() for name, module in model.named_modules()
                      if isinstance(module, torch.nn.Linear) and ".layers." in name)
    assert spec.quantizable_params == quantizable  # every decoder Linear, lm_head excluded (tied anyway)
