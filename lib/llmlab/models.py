"""Model architecture specs and exact parameter counts from any Hugging Face decoder `config.json`.

`load_spec(model)` accepts a config dict, a path to a `config.json` (or a folder holding one), a catalog name
(`data/models/<name>.json`, matched case-insensitively) or a hub id like "Qwen/Qwen2.5-0.5B" (online only), and
returns a `ModelSpec`: the shapes that size a model (layers, heads, KV heads, head_dim, sliding window, experts)
and its EXACT parameter count, total and active per token.

How the count is made (symbols: d hidden_size, H heads, K KV heads, hd head_dim, f intermediate_size,
f_e one expert's intermediate size, f_s the shared expert's, E routed experts, k experts per token,
V vocab_size, L layers):

    embedding      V*d
    attention      q [H*hd, d], k [K*hd, d], v [K*hd, d], o [d, H*hd]   (+ biases where the family has them:
                   qwen2 on q/k/v; llama/qwen3/gemma when `attention_bias` is set)
    dense MLP      gate [f, d], up [f, d], down [d, f]                   (gated, 3 matrices; + `mlp_bias`)
    MoE layer      router [E, d] + E experts of 3 matrices [f_e, d], [f_e, d], [d, f_e]
                   + a shared expert of 3 matrices with f_s and its gate [1, d]  (qwen2_moe)
    norms          RMSNorm weights of size d: 2 per layer (4 in gemma2/gemma3), of size hd: q_norm and k_norm
                   (qwen3, gemma3), and one final norm
    lm_head        V*d, or 0 when tied to the embedding
    fused weights  phi3's qkv_proj [(H+2K)*hd, d] and gate_up_proj [2f, d] hold the same numbers as the separate
                   matrices; only their names change.

Active parameters per token (MoE): every parameter except the routed experts, plus k/E of the routed experts.

The per-family differences (which biases, which extra norms, which config keys name the MoE sizes, which matrices
are fused) are data, in `FAMILIES`. A model_type the table does not know is built by transformers on the meta
device (no memory, no weights) and its parameters counted there: `count_method` says which way a spec was made.
Both ways read the config through transformers' own config class, so defaults (e.g. gemma2's tied embeddings)
and the sliding-window layout (`layer_types`) are exactly what transformers would build. The test suite checks the
analytic count against the meta-device count, exactly, for every family in the table.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmlab.paths import cache_dir, data_dir

# --------------------------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearShape:
    """One kind of Linear weight inside the decoder blocks, and how many of it the model holds."""

    name: str  # module path inside a decoder layer, e.g. "self_attn.q_proj", "mlp.experts.gate_proj"
    out_features: int  # rows of the weight [out, in]
    in_features: int  # columns of the weight [out, in]
    count: int  # how many such matrices in the whole model (layers x experts)
    bias: bool = False  # whether each matrix carries a bias vector of out_features (kept in 16-bit by quantizers)

    @property
    def weight_params(self) -> int:
        """Weights of all `count` matrices (no biases)."""
        return self.out_features * self.in_features * self.count

    @property
    def bias_params(self) -> int:
        """Bias values of all `count` matrices."""
        return self.out_features * self.count if self.bias else 0


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only model's architecture, as far as sizing, quantizing and serving it go."""

    name: str  # catalog name, or the path / hub id given
    model_type: str  # config["model_type"], e.g. "llama", "qwen2", "mixtral", "gemma2"
    vocab_size: int  # V: rows of the embedding table
    hidden_size: int  # d: width of the residual stream
    intermediate_size: int  # f: width of the dense MLP (0 when the config does not name one)
    num_layers: int  # L: decoder blocks
    num_attention_heads: int  # H: query heads
    num_kv_heads: int  # K: key/value heads (= H when the config has no num_key_value_heads: MHA)
    head_dim: int  # hd: config["head_dim"] when present, else hidden_size // num_attention_heads
    tie_word_embeddings: bool  # lm_head shares the embedding matrix
    max_position_embeddings: int  # longest context the config declares
    sliding_window: int | None  # tokens a windowed layer attends to; None when no layer uses a window
    num_sliding_layers: int  # layers that attend through the window (gemma2: every other one; mistral v0.1: all)
    num_experts: int  # E: routed experts per MoE layer; 0 for dense
    num_experts_per_token: int  # k: routed experts each token goes through; 0 for dense
    params: int  # exact total parameter count
    active_params: int  # parameters touched per token (MoE: k of E routed experts + the rest); = params for dense
    embedding_params: int  # input embedding table, V*d
    lm_head_params: int  # output projection, V*d; 0 when tied to the embedding
    quantizable_linears: tuple[LinearShape, ...]  # Linear weights inside decoder blocks that W8/W4 methods quantize
    config: dict = field(repr=False)  # the raw config, as read
    count_method: str = "analytic"  # "analytic" (FAMILIES table) or "meta" (transformers on the meta device)
    expert_intermediate_size: int = 0  # f_e: one routed expert's MLP width; 0 for dense
    num_moe_layers: int = 0  # layers whose MLP is a mixture of experts (the rest are dense)
    breakdown: dict = field(default_factory=dict, repr=False)  # params by part (embedding, attention, mlp, ...)

    @property
    def gqa_factor(self) -> int:
        """Query heads sharing one KV head (1 for MHA, H for MQA)."""
        return self.num_attention_heads // self.num_kv_heads

    @property
    def quantizable_params(self) -> int:
        """Weights a W8/W4 quantizer rewrites: the decoder Linear weights, no biases."""
        return sum(linear.weight_params for linear in self.quantizable_linears)

    @property
    def kept_params(self) -> int:
        """What quantizers keep in 16-bit: embeddings, lm_head, norms, biases, routers."""
        return self.params - self.quantizable_params

    @property
    def non_embedding_params(self) -> int:
        """Parameters outside the embedding and lm_head (the figure scaling laws and model cards often quote)."""
        return self.params - self.embedding_params - self.lm_head_params

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model."""
        return self.num_experts > 0


# --------------------------------------------------------------------------------------------------------------
# Architecture knowledge, as data
# --------------------------------------------------------------------------------------------------------------

FusedNames = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Family:
    """How one model_type builds its decoder layer, as far as parameter counts go."""

    qkv_bias: bool | str = False  # biases on q/k/v: a constant, or the config key that switches them
    o_bias: bool | str = False  # bias on o_proj: a constant, or the config key that switches it
    mlp_bias: bool | str = False  # biases on gate/up/down: a constant, or the config key that switches them
    layer_norms: int = 2  # RMSNorms of size d per layer (input, post-attention; gemma2 adds pre/post-feedforward)
    head_norms: int = 0  # RMSNorms of size head_dim per layer (q_norm and k_norm: 2)
    fused: FusedNames = ()  # (fused module, the matrices it stacks): phi3's qkv_proj and gate_up_proj
    num_experts_key: str | None = None  # MoE: config key of the number of routed experts; None for dense
    expert_size_key: str = "intermediate_size"  # MoE: config key of one routed expert's MLP width
    shared_expert_size_key: str | None = None  # MoE: config key of the shared expert's MLP width, if any
    shared_expert_gate: bool = False  # MoE: a Linear(d, 1) scaling the shared expert's output (qwen2_moe)

    @property
    def required_keys(self) -> tuple[str, ...]:
        """Config keys the count cannot do without (transformers would silently fill in its own defaults)."""
        moe = (self.num_experts_key, EXPERTS_PER_TOKEN_KEY, self.expert_size_key) if self.num_experts_key else ()
        shared = (self.shared_expert_size_key,) if self.shared_expert_size_key else ()
        return tuple(dict.fromkeys(BASE_KEYS + ("intermediate_size",) + moe + shared))


BASE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
EXPERTS_PER_TOKEN_KEY = "num_experts_per_tok"
PHI3_FUSED: FusedNames = (
    ("self_attn.qkv_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj")),
)

FAMILIES: dict[str, Family] = {
    "llama": Family(qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias"),
    "mistral": Family(),
    "mixtral": Family(num_experts_key="num_local_experts"),
    "qwen2": Family(qkv_bias=True),
    "qwen2_moe": Family(qkv_bias="qkv_bias", num_experts_key="num_experts", expert_size_key="moe_intermediate_size",
                        shared_expert_size_key="shared_expert_intermediate_size", shared_expert_gate=True),
    "qwen3": Family(qkv_bias="attention_bias", o_bias="attention_bias", head_norms=2),
    "qwen3_moe": Family(qkv_bias="attention_bias", o_bias="attention_bias", head_norms=2,
                        num_experts_key="num_experts", expert_size_key="moe_intermediate_size"),
    "gemma": Family(qkv_bias="attention_bias", o_bias="attention_bias"),
    "gemma2": Family(qkv_bias="attention_bias", o_bias="attention_bias", layer_norms=4),
    "gemma3_text": Family(qkv_bias="attention_bias", o_bias="attention_bias", layer_norms=4, head_norms=2),
    "phi3": Family(fused=PHI3_FUSED),
}

# For model types outside FAMILIES (counted on the meta device): the config keys other families use for MoE sizes,
# and the names of the Linear layers that route tokens (kept in 16-bit, not quantized).
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
INTERMEDIATE_KEYS = ("intermediate_size", "ffn_hidden_size", "n_inner")
ROUTER_NAMES = ("gate", "router", "shared_expert_gate")

CATALOG_FOLDER = "models"
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


# --------------------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------------------


def load_spec(model: str | os.PathLike | dict, name: str | None = None) -> ModelSpec:
    """The spec of `model`: a config dict, a path to config.json (or its folder), a catalog name, or a hub id."""
    raw, default_name = _read_config(model)
    cache = _spec_cache_file(raw)
    if cache.is_file():  # reading a config through transformers costs seconds (it imports torch): once per config
        return _spec_from_json(json.loads(cache.read_text()), name or default_name)
    config = _completed(raw)
    model_type = config["model_type"]
    family = FAMILIES.get(model_type)
    hf_config = _transformers_config(config, family.required_keys if family else BASE_KEYS)
    if family is None:
        spec = _meta_spec(raw, hf_config, name or default_name)
    else:
        spec = _analytic_spec(raw, hf_config, family, name or default_name)
    _store_spec(cache, spec)
    return spec


def _spec_cache_file(raw: dict) -> Path:
    """Where the spec of this exact config is cached: keyed by the config, this module's code and transformers' version."""
    import hashlib
    from importlib.metadata import version

    key = hashlib.sha256()
    key.update(json.dumps(raw, sort_keys=True, default=str).encode())
    key.update(Path(__file__).read_bytes())
    key.update(version("transformers").encode())
    return cache_dir() / "specs" / f"{key.hexdigest()[:32]}.json"


def _store_spec(path: Path, spec: ModelSpec) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(asdict(spec), default=str))
        partial.replace(path)
    except OSError:  # a read-only home: the spec is still returned, only not cached
        pass


def _spec_from_json(fields: dict, name: str) -> ModelSpec:
    linears = tuple(LinearShape(**linear) for linear in fields.pop("quantizable_linears"))
    return ModelSpec(**{**fields, "name": name, "quantizable_linears": linears})


def catalog_names() -> list[str]:
    """Names of the configs shipped in data/models/, sorted."""
    return sorted(path.stem for path in (data_dir() / CATALOG_FOLDER).glob("*.json"))


def count_parameters_meta(config: dict) -> tuple[int, int]:
    """(total, active) parameters of the model transformers builds from `config` on the meta device: the ground truth.

    Routed experts are the parameters under an `.experts.` module; active = the rest + k/E of them.
    """
    hf_config = _transformers_config(_completed(config), BASE_KEYS)
    return _meta_counts(_meta_model(hf_config), hf_config)


# --------------------------------------------------------------------------------------------------------------
# Reading a config
# --------------------------------------------------------------------------------------------------------------


def _read_config(model: str | os.PathLike | dict) -> tuple[dict, str]:
    """(raw config dict, default spec name) from whichever form `model` takes."""
    if isinstance(model, dict):
        return dict(model), str(model.get("_name_or_path") or model.get("model_type", "config"))
    path = Path(model).expanduser()
    if path.exists():
        return _read_json(path), str(model)
    text = str(model)
    by_lower = {catalog_name.lower(): catalog_name for catalog_name in catalog_names()}
    if text.lower() in by_lower:
        catalog_name = by_lower[text.lower()]
        return _read_json(data_dir() / CATALOG_FOLDER / f"{catalog_name}.json"), catalog_name
    if text.endswith(".json") or text.startswith((".", "/", "~")):
        raise ValueError(f"no file at {text}; pass an existing config.json, its folder, or a catalog name")
    if HUB_ID.fullmatch(text):
        return _hub_config(text), text
    closest = difflib.get_close_matches(text.lower(), list(by_lower), n=3, cutoff=0.4) or list(by_lower)
    raise LookupError(f"unknown model {text!r}: closest catalog names are {', '.join(closest)}; "
                      "or pass a path to a config.json, or a hub id like 'Qwen/Qwen2.5-0.5B' when online")


def _read_json(path: Path) -> dict:
    """A config.json, or the config.json inside folder `path`."""
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path} holds no config.json; pass the model folder or the config file itself")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON ({error}); pass a Hugging Face config.json") from error
    if not isinstance(config, dict):
        raise ValueError(f"{file} holds a JSON {type(config).__name__}, not an object; pass a config.json")
    return config


def _hub_config(hub_id: str) -> dict:
    """The raw config.json of a hub repository (or the local Hugging Face cache); never runs remote code."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return _read_json(Path(hf_hub_download(hub_id, "config.json")))
    except (OSError, HfHubHTTPError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LookupError(f"could not fetch the config of {hub_id!r} ({reason}); offline? use a catalog name "
                          f"({', '.join(catalog_names()[:4])}, ...) or a path to a config.json") from error


def _completed(raw: dict) -> dict:
    """`raw` with the two conventions this module defines made explicit, so both counts build the same model.

    num_key_value_heads absent -> num_attention_heads (multi-head attention);
    head_dim absent -> hidden_size // num_attention_heads (some config classes default to 128 or 256 instead).
    """
    if "model_type" not in raw:
        raise ValueError(_missing("model_type", raw))
    config = dict(raw)
    heads, d = raw.get("num_attention_heads"), raw.get("hidden_size")
    if raw["model_type"] in FAMILIES and heads:
        if config.get("num_key_value_heads") is None:
            config["num_key_value_heads"] = heads
        if config.get("head_dim") is None and d:
            config["head_dim"] = d // heads
    return config


def _transformers_config(config: dict, required: tuple[str, ...]):
    """transformers' config object for `config` (its defaults filled in), after checking the required keys."""
    from transformers import CONFIG_MAPPING

    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING:
        import transformers

        raise ValueError(f"model_type {model_type!r} is unknown to transformers {transformers.__version__} "
                         "(remote code stays off): upgrade transformers or pass a config of a supported family")
    config_class = CONFIG_MAPPING[model_type]
    aliases = getattr(config_class, "attribute_map", {})
    for key in required:
        if key not in config and aliases.get(key) not in config:
            raise ValueError(_missing(key, config))
    arguments = {key: value for key, value in config.items() if key != "model_type"}
    return config_class(**arguments)


def _missing(key: str, config: dict) -> str:
    hint = (" (this is a multimodal config: pass its 'text_config' to size the language model)"
            if "text_config" in config else "")
    return f"the config has no {key!r}{hint}; pass a complete Hugging Face config.json"


# --------------------------------------------------------------------------------------------------------------
# The analytic count: one helper per part
# --------------------------------------------------------------------------------------------------------------


def _flag(hf_config, flag: bool | str) -> bool:
    """A family's bias switch: a constant, or the value of the config key it names."""
    return flag if isinstance(flag, bool) else bool(getattr(hf_config, flag, False))


def _attention_linears(hf_config, family: Family, head_dim: int) -> list[LinearShape]:
    """q, k, v, o of every layer: [H*hd, d], [K*hd, d], [K*hd, d], [d, H*hd]."""
    d, layers = hf_config.hidden_size, hf_config.num_hidden_layers
    q_width = hf_config.num_attention_heads * head_dim
    kv_width = hf_config.num_key_value_heads * head_dim
    qkv_bias, o_bias = _flag(hf_config, family.qkv_bias), _flag(hf_config, family.o_bias)
    return [LinearShape("self_attn.q_proj", q_width, d, layers, qkv_bias),
            LinearShape("self_attn.k_proj", kv_width, d, layers, qkv_bias),
            LinearShape("self_attn.v_proj", kv_width, d, layers, qkv_bias),
            LinearShape("self_attn.o_proj", d, q_width, layers, o_bias)]


def _gated_mlp(prefix: str, d: int, width: int, count: int, bias: bool) -> list[LinearShape]:
    """A gated MLP's three matrices, `count` times: gate [w, d], up [w, d], down [d, w]."""
    return [LinearShape(f"{prefix}.gate_proj", width, d, count, bias),
            LinearShape(f"{prefix}.up_proj", width, d, count, bias),
            LinearShape(f"{prefix}.down_proj", d, width, count, bias)]


def _moe_layer_count(hf_config, num_experts: int) -> int:
    """Layers whose MLP is a mixture of experts: every `decoder_sparse_step`-th one, minus `mlp_only_layers`."""
    if num_experts == 0:
        return 0
    step = getattr(hf_config, "decoder_sparse_step", 1) or 1
    dense_only = set(getattr(hf_config, "mlp_only_layers", None) or ())
    return sum((i + 1) % step == 0 and i not in dense_only for i in range(hf_config.num_hidden_layers))


def _fuse(linears: list[LinearShape], fused: FusedNames) -> list[LinearShape]:
    """Stack matrices that a family stores as one (phi3's qkv_proj): same parameters, one name, summed rows."""
    for fused_name, part_names in fused:
        parts = [linear for linear in linears if linear.name in part_names]
        if not parts:
            continue
        merged = LinearShape(fused_name, sum(part.out_features for part in parts), parts[0].in_features,
                             parts[0].count, any(part.bias for part in parts))
        position = linears.index(parts[0])
        linears = [linear for linear in linears if linear not in parts]
        linears.insert(position, merged)
    return linears


def _norm_params(d: int, head_dim: int, layers: int, family: Family) -> int:
    """RMSNorm weights: per layer `layer_norms` of size d and `head_norms` of size hd, plus the final norm."""
    return layers * (family.layer_norms * d + family.head_norms * head_dim) + d


def _router_params(d: int, num_experts: int, moe_layers: int, shared_expert_gate: bool) -> int:
    """A router [E, d] per MoE layer, plus the shared expert's gate [1, d] where the family has one."""
    return moe_layers * (num_experts * d + (d if shared_expert_gate else 0))


def _linear_params(linears: list[LinearShape]) -> int:
    """Weights and biases of a list of Linear shapes."""
    return sum(linear.weight_params + linear.bias_params for linear in linears)


def _active_params(total: int, routed: int, num_experts: int, experts_per_token: int) -> int:
    """Parameters one token touches: everything but the routed experts, plus k of the E experts."""
    return total - routed + (routed // num_experts * experts_per_token if num_experts else 0)


def _analytic_spec(raw: dict, hf_config, family: Family, name: str) -> ModelSpec:
    """The spec of a family in FAMILIES, every parameter counted from the config."""
    d, vocab, layers = hf_config.hidden_size, hf_config.vocab_size, hf_config.num_hidden_layers
    head_dim = getattr(hf_config, "head_dim", None) or d // hf_config.num_attention_heads
    num_experts = getattr(hf_config, family.num_experts_key) if family.num_experts_key else 0
    experts_per_token = getattr(hf_config, EXPERTS_PER_TOKEN_KEY) if num_experts else 0
    expert_width = getattr(hf_config, family.expert_size_key) if num_experts else 0
    shared_width = getattr(hf_config, family.shared_expert_size_key) if family.shared_expert_size_key else 0
    moe_layers = _moe_layer_count(hf_config, num_experts)
    dense_layers = layers - moe_layers
    mlp_bias = _flag(hf_config, family.mlp_bias)

    attention = _attention_linears(hf_config, family, head_dim)
    dense_mlp = _gated_mlp("mlp", d, hf_config.intermediate_size, dense_layers, mlp_bias) if dense_layers else []
    experts = _gated_mlp("mlp.experts", d, expert_width, moe_layers * num_experts, False) if moe_layers else []
    shared = _gated_mlp("mlp.shared_expert", d, shared_width, moe_layers, False) if moe_layers and shared_width else []

    tied = bool(hf_config.tie_word_embeddings)
    breakdown = {
        "embedding": vocab * d,
        "attention": _linear_params(attention),
        "mlp": _linear_params(dense_mlp),
        "experts": _linear_params(experts),
        "shared_expert": _linear_params(shared),
        "router": _router_params(d, num_experts, moe_layers, bool(shared) and family.shared_expert_gate),
        "norms": _norm_params(d, head_dim, layers, family),
        "lm_head": 0 if tied else vocab * d,
    }
    params = sum(breakdown.values())
    active = _active_params(params, breakdown["experts"], num_experts, experts_per_token)
    window, sliding_layers = _sliding_layers(hf_config)
    return ModelSpec(
        name=name, model_type=raw["model_type"], vocab_size=vocab, hidden_size=d,
        intermediate_size=hf_config.intermediate_size,
        num_layers=layers, num_attention_heads=hf_config.num_attention_heads,
        num_kv_heads=hf_config.num_key_value_heads, head_dim=head_dim, tie_word_embeddings=tied,
        max_position_embeddings=getattr(hf_config, "max_position_embeddings", 0) or 0,
        sliding_window=window, num_sliding_layers=sliding_layers,
        num_experts=num_experts, num_experts_per_token=experts_per_token,
        params=params, active_params=active, embedding_params=breakdown["embedding"],
        lm_head_params=breakdown["lm_head"],
        quantizable_linears=tuple(_fuse(attention + dense_mlp + experts + shared, family.fused)),
        config=raw, count_method="analytic", expert_intermediate_size=expert_width, num_moe_layers=moe_layers,
        breakdown=breakdown,
    )


def _sliding_layers(hf_config) -> tuple[int | None, int]:
    """(window, layers using it): transformers' `layer_types` when the family has them, else every layer."""
    window = getattr(hf_config, "sliding_window", None) or None  # qwen2_moe stores 0 when the window is off
    if window is None:
        return None, 0
    layer_types = getattr(hf_config, "layer_types", None)
    count = hf_config.num_hidden_layers if layer_types is None else layer_types.count("sliding_attention")
    return (window if count else None), count


# --------------------------------------------------------------------------------------------------------------
# The meta-device count: any model type transformers knows
# --------------------------------------------------------------------------------------------------------------


def _meta_model(hf_config):
    """The model transformers builds from `hf_config`, on the meta device (shapes only, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config)


def _meta_counts(model, hf_config) -> tuple[int, int]:
    """(total, active) parameters of a built model; tied tensors count once."""
    total = sum(parameter.numel() for parameter in model.parameters())
    routed = sum(parameter.numel() for name, parameter in model.named_parameters() if ".experts." in name)
    return total, _active_params(total, routed, *_moe_sizes(hf_config))


def _moe_sizes(hf_config) -> tuple[int, int]:
    """(E, k) under whichever config keys the family uses; (0, 0) for dense."""
    num_experts = next((getattr(hf_config, key) for key in EXPERT_COUNT_KEYS if getattr(hf_config, key, None)), 0)
    return num_experts, (getattr(hf_config, EXPERTS_PER_TOKEN_KEY, 0) or 0) if num_experts else 0


def _meta_linears(model) -> tuple[LinearShape, ...]:
    """Linear weights inside numbered decoder layers (routers and lm_head left out), grouped by name and shape."""
    import torch
    from transformers.pytorch_utils import Conv1D

    counts: Counter = Counter()
    for module_name, module in model.named_modules():
        local = _layer_local_name(module_name)
        if local is None or local.rsplit(".", 1)[-1] in ROUTER_NAMES:
            continue
        if isinstance(module, torch.nn.Linear):
            counts[(local, module.out_features, module.in_features, module.bias is not None)] += 1
        elif isinstance(module, Conv1D):  # GPT-2 style: weight [in, out]
            counts[(local, module.nf, module.weight.shape[0], module.bias is not None)] += 1
    for parameter_name, parameter in model.named_parameters():
        local = _layer_local_name(parameter_name)
        if local is not None and ".experts." in f".{local}" and parameter.dim() == 3:
            experts, out_features, in_features = parameter.shape  # stacked experts: [E, out, in]
            counts[(local, out_features, in_features, False)] += experts
    return tuple(LinearShape(name, out_features, in_features, count, bias)
                 for (name, out_features, in_features, bias), count in counts.items())


def _layer_local_name(qualified_name: str) -> str | None:
    """A module's name inside its layer, indices dropped: model.layers.3.mlp.experts.7.w1 -> mlp.experts.w1.

    None for modules outside the numbered decoder layers (embedding, final norm, lm_head).
    """
    parts = re.split(r"\.\d+\.", qualified_name, maxsplit=1)
    if len(parts) < 2:
        return None
    return re.sub(r"\.\d+(?=\.|$)", "", parts[1])


def _meta_spec(raw: dict, hf_config, name: str) -> ModelSpec:
    """The spec of a model type outside FAMILIES: shapes from the config, counts from the meta-device model."""
    model = _meta_model(hf_config)
    total, active = _meta_counts(model, hf_config)
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is None or output.weight is embedding
    lm_head = 0 if tied else output.weight.numel()
    heads = hf_config.num_attention_heads
    num_experts, experts_per_token = _moe_sizes(hf_config)
    window, sliding_layers = _sliding_layers(hf_config)
    intermediate = next((getattr(hf_config, key) for key in INTERMEDIATE_KEYS if getattr(hf_config, key, None)), 0)
    return ModelSpec(
        name=name, model_type=raw["model_type"], vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size, intermediate_size=intermediate,
        num_layers=hf_config.num_hidden_layers, num_attention_heads=heads,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        tie_word_embeddings=tied, max_position_embeddings=getattr(hf_config, "max_position_embeddings", 0) or 0,
        sliding_window=window, num_sliding_layers=sliding_layers,
        num_experts=num_experts, num_experts_per_token=experts_per_token,
        params=total, active_params=active, embedding_params=embedding.numel(), lm_head_params=lm_head,
        quantizable_linears=_meta_linears(model), config=raw, count_method="meta",
        breakdown={"embedding": embedding.numel(), "decoder": total - embedding.numel() - lm_head, "lm_head": lm_head},
    )
