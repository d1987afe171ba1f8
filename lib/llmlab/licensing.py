"""Licences of models and of what you make from them: quantized, fine-tuned and merged weights.

The guide (§6): quantization is a technical transformation and changes nothing in a model's licence; a merged model
inherits the restrictions of every one of its components (its example: Luminum-123B, Mistral MRL + CC-BY-NC); if the
base model forbids commercial use or redistribution, so does its GGUF or its TensorRT engine, and what you may share
instead is the recipe (scripts that reproduce the quantization or the merge).

The rules, as code:
    quantize, convert, compile   same weights in another format: exactly the parent's terms
    fine-tune                    the parent's terms, plus any licence the fine-tuner adds
    merge                        every parent's terms at once: the strictest permission, all obligations, all restrictions
The catalog (data/licences.json) holds a few licences in summary and which catalog model comes under which.
Summaries for teaching, not legal advice.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from llmlab.paths import data_dir

PERMISSIONS = ("yes", "conditional", "no")  # from the most to the least permissive
TRANSFORMS = ("quantize", "convert", "compile", "fine-tune", "finetune", "merge")
USES = {  # what someone may want to do -> the permission it needs
    "internal-research": None,  # every catalogued licence allows research use
    "commercial-service": "commercial",  # serve the model in a paying product (or inside a business)
    "redistribute-weights": "redistribution",  # publish or hand over the weights (original, GGUF, engine, merge)
    "share-scripts": None,  # publish the recipe that rebuilds them (no weights): always possible
}


@dataclass(frozen=True)
class Licence:
    """One licence, in summary."""

    id: str  # catalog key, e.g. "llama3.1"
    name: str  # its title
    commercial: str  # "yes", "conditional" or "no"
    commercial_condition: str  # the condition (or the reason for "no"); "" when plain yes
    redistribution: str  # "yes", "conditional" (with obligations) or "no"
    obligations: tuple[str, ...]  # what a user must do (notices, naming, policies)
    restrictions: tuple[str, ...]  # what a user must not do
    source: str  # the document summarized


@dataclass(frozen=True)
class Terms:
    """What binds one model: every licence in its lineage, combined."""

    model: str  # the model's name
    licences: tuple[str, ...]  # ids of every licence that binds it (its own and its ancestors'), sorted
    commercial: str  # the strictest of their commercial permissions
    redistribution: str  # the strictest of their redistribution permissions
    conditions: tuple[str, ...]  # the commercial conditions that apply
    obligations: tuple[str, ...]  # all of their obligations
    restrictions: tuple[str, ...]  # all of their restrictions
    lineage: tuple[str, ...]  # how the model was made, one line per step

    def binding(self) -> tuple:
        """Everything but the lineage: two models with equal `binding()` come under the same terms."""
        return (self.licences, self.commercial, self.redistribution, self.conditions, self.obligations,
                self.restrictions)


@functools.lru_cache(maxsize=1)
def _catalog() -> dict:
    return json.loads((data_dir() / "licences.json").read_text())


def licence_ids() -> list[str]:
    return list(_catalog()["licences"])


def licence(licence_id: str) -> Licence:
    """The catalog entry of one licence."""
    entries = _catalog()["licences"]
    if licence_id not in entries:
        raise LookupError(f"unknown licence {licence_id!r}; the catalog knows {', '.join(entries)} "
                          "(add yours to data/licences.json)")
    entry = entries[licence_id]
    return Licence(licence_id, entry["name"], entry["commercial"], entry["commercial_condition"],
                   entry["redistribution"], tuple(entry["obligations"]), tuple(entry["restrictions"]), entry["source"])


def model_names() -> list[str]:
    return list(_catalog()["models"])


def hub_id(model: str) -> str:
    """The hub repository a catalog model's weights come from (what a serving command names)."""
    return _model_entry(model)["hub_id"]


def model_terms(model: str) -> Terms:
    """The terms binding a catalog model, its ancestors' included (a fine-tune or a merge lists its parents)."""
    entry = _model_entry(model)
    own = (entry["licence"],) if entry.get("licence") else ()
    if not entry.get("parents"):
        return _combine(model, own, (f"{model}: released under {', '.join(own) or 'no stated licence'}",))
    return derive([model_terms(parent) for parent in entry["parents"]], entry["transform"], model, own)


def derive(parents: list, transform: str, name: str = "derived", added_licences: tuple[str, ...] = ()) -> Terms:
    """The terms of a model made from `parents` (catalog names or Terms) by `transform`.

    quantize / convert / compile take exactly one parent and change nothing; fine-tune takes one parent and adds
    `added_licences`; merge takes any number and combines them all (plus `added_licences`).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
    parents = [parent if isinstance(parent, Terms) else model_terms(parent) for parent in parents]
    if not parents:
        raise ValueError("derive needs at least one parent model")
    if transform != "merge" and len(parents) != 1:
        raise ValueError(f"{transform} makes a model from one parent, not {len(parents)}; use transform='merge'")
    if transform in ("quantize", "convert", "compile") and added_licences:
        raise ValueError(f"{transform} cannot add a licence: the weights are the parent's, in another format")
    for licence_id in added_licences:
        licence(licence_id)  # refuse unknown ids
    licences = tuple(sorted({i for parent in parents for i in parent.licences} | set(added_licences)))
    step = {"quantize": "quantized", "convert": "converted", "compile": "compiled into an engine",
            "fine-tune": "fine-tuned", "finetune": "fine-tuned", "merge": "merged"}[transform]
    line = f"{name}: {step} from {', '.join(parent.model for parent in parents)}"
    if added_licences:
        line += f", adding {', '.join(added_licences)}"
    lineage = tuple(dict.fromkeys(line for parent in parents for line in parent.lineage)) + (line,)
    return _combine(name, licences, lineage)


def check_use(model, use: str) -> tuple[str, str]:
    """Whether `use` (see USES) is allowed for a model (catalog name or Terms): ("yes" | "conditional" | "no", why)."""
    if use not in USES:
        raise ValueError(f"unknown use {use!r}; choose one of {', '.join(USES)}")
    terms = model if isinstance(model, Terms) else model_terms(model)
    needed = USES[use]
    if needed is None:
        why = ("the recipe (quantization or merge scripts, no weights) can always be shared"
               if use == "share-scripts" else "research use is allowed by every licence in the catalog")
        return "yes", why
    permission = getattr(terms, needed)
    binding = [licence(i) for i in terms.licences if getattr(licence(i), needed) == permission]
    names = ", ".join(item.name for item in binding)
    if permission == "yes":
        return "yes", f"allowed by {names}" + (f"; obligations: {'; '.join(terms.obligations)}"
                                               if terms.obligations else "")
    if permission == "conditional":
        conditions = "; ".join(terms.conditions) if needed == "commercial" else "; ".join(terms.obligations)
        return "conditional", f"allowed under {names} if: {conditions}"
    return "no", (f"forbidden by {names}; share the scripts that rebuild the weights instead"
                  if needed == "redistribution" else
                  f"forbidden by {names} ({'; '.join(terms.conditions)}); the quantized or merged weights "
                  "inherit it; share only the recipe, or license the parent commercially")


def _combine(name: str, licences: tuple[str, ...], lineage: tuple[str, ...]) -> Terms:
    items = [licence(i) for i in sorted(set(licences))]
    strictest = lambda values: max(values, key=PERMISSIONS.index, default="no")  # noqa: E731
    return Terms(
        model=name, licences=tuple(item.id for item in items),
        commercial=strictest([item.commercial for item in items]),
        redistribution=strictest([item.redistribution for item in items]),
        conditions=tuple(dict.fromkeys(item.commercial_condition for item in items if item.commercial_condition)),
        obligations=tuple(dict.fromkeys(o for item in items for o in item.obligations)),
        restrictions=tuple(dict.fromkeys(r for item in items for r in item.restrictions)),
        lineage=lineage)


def _model_entry(model: str) -> dict:
    models = _catalog()["models"]
    key = model.lower()
    if key not in models:
        raise LookupError(f"no licence recorded for {model!r}; the catalog knows {', '.join(models)} "
                          "(add it to data/licences.json, or derive() from models it does know)")
    return models[key]
