"""Licences: quantization changes nothing, a merge inherits everything, the catalog is consistent."""

import json

import pytest

from llmlab.licensing import (PERMISSIONS, check_use, derive, hub_id, licence, licence_ids, model_names,
                              model_terms)
from llmlab.paths import data_dir


def test_quantizing_converting_compiling_change_nothing():
    for name in model_names():
        for transform in ("quantize", "convert", "compile"):
            assert derive([name], transform).binding() == model_terms(name).binding(), (name, transform)
    with pytest.raises(ValueError, match="cannot add a licence"):
        derive(["llama-3.1-8b"], "quantize", added_licences=("apache-2.0",))


def test_a_merge_inherits_every_parents_restrictions():
    luminum = model_terms("luminum-123b")  # the guide's example
    assert luminum.licences == ("cc-by-nc-4.0", "mistral-research")
    assert luminum.commercial == "no"
    assert set(licence("mistral-research").restrictions) <= set(luminum.restrictions)
    assert set(licence("cc-by-nc-4.0").obligations) <= set(luminum.obligations)
    mixed = derive(["qwen2.5-7b", "llama-3.1-8b"], "merge", "frankenmerge")
    assert mixed.commercial == "conditional" and mixed.licences == ("apache-2.0", "llama3.1")
    assert any("Built with Llama" in obligation for obligation in mixed.obligations)
    with pytest.raises(ValueError, match="use transform='merge'"):
        derive(["qwen2.5-7b", "llama-3.1-8b"], "fine-tune")


def test_check_use():
    assert check_use("qwen2.5-7b", "commercial-service")[0] == "yes"
    verdict, why = check_use("llama-3.1-70b", "commercial-service")
    assert verdict == "conditional" and "700 million" in why
    verdict, why = check_use(derive(["mistral-large-2407"], "convert", "mistral-large-gguf"), "commercial-service")
    assert verdict == "no" and "share only the recipe" in why
    assert check_use("luminum-123b", "share-scripts")[0] == "yes"
    with pytest.raises(ValueError, match="unknown use"):
        check_use("qwen2.5-7b", "resell")


def test_the_catalog_is_consistent():
    catalog = json.loads((data_dir() / "licences.json").read_text())
    for key, entry in catalog["licences"].items():
        assert entry["commercial"] in PERMISSIONS and entry["redistribution"] in PERMISSIONS, key
        assert entry["source"], key
    for name, entry in catalog["models"].items():
        assert entry.get("licence") in (None, *licence_ids()), name
        assert all(parent in catalog["models"] for parent in entry.get("parents", ())), name
        assert entry.get("licence") or entry.get("parents"), name
    assert hub_id("llama-3.1-8b") == "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(LookupError, match="no licence recorded"):
        model_terms("gpt-5")
    with pytest.raises(LookupError, match="unknown licence"):
        licence("wtfpl")
