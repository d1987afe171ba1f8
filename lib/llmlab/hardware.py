"""GPUs as data: memory, bandwidth, dense TFLOPS per dtype, compute capability and the formats each runs natively.

The catalog lives in `data/gpus.json` (datasheet figures, each entry with its `source`); this module reads it and
answers three questions the course keeps asking:

- `gpu("h100")`: which card is meant, and what does its datasheet say?
- `supports(gpu, "fp8")`: do its tensor cores take this format as a matmul input? (fp8 needs compute capability
  >= 8.9, bf16 and tf32 >= 8.0, int8 >= 7.5; Hopper dropped int4.) Weight-only formats (int4 AWQ/GPTQ, nf4) are
  dequantized to 16-bit inside the kernel, so they ask about fp16, not int4: `llmlab.memory.FORMATS` says which.
- `detect()` / `pick_device()`: what is this machine running on? `pick_device` is the one device helper the
  notebooks use: it prints its choice and the reason, and nothing else in the course calls `.cuda()`.

torch is imported only by `detect` and `pick_device`, so the catalog and the planner stay fast to import.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from dataclasses import dataclass, field

from llmlab.paths import data_dir

GiB = 2**30

# Where torch's total_memory was never measured for a card, it is estimated as the DRAM behind the datasheet figure,
# less ECC where it is on by default, less this share that the driver keeps for itself. Measured on the lent H100 SXM
# (2026-11-25, driver 580): 80 GiB of HBM3 = 81920 MiB; nvidia-smi 81559 MiB total, 480 MiB of it reserved; torch
# 85,017,493,504 B = 81079 MiB, i.e. 1.03 % less than the DRAM. Every estimate is flagged by `GPU.memory_measured`.
DRIVER_RESERVE_FRACTION = 1 - 81079 / 81920

# Compute capability from which the tensor cores take each format (Volta 7.0, Turing 7.5, Ampere 8.0/8.6, Ada 8.9,
# Hopper 9.0); int4 tensor cores exist on Turing, Ampere and Ada only. `native_formats` in the catalog must agree.
FORMAT_MIN_CAPABILITY = {"fp32": (0, 0), "tf32": (8, 0), "fp16": (7, 0), "bf16": (8, 0), "fp8": (8, 9),
                         "int8": (7, 5), "int4": (7, 5)}
FORMAT_MAX_CAPABILITY = {"int4": (8, 9)}  # the last architecture that has it
PRECISIONS = tuple(FORMAT_MIN_CAPABILITY)

CATALOG_FILE = "gpus.json"
DEVICE_ENVIRONMENT = "LLMLAB_DEVICE"  # forces pick_device's choice, e.g. LLMLAB_DEVICE=cpu on a GPU machine


@dataclass(frozen=True)
class GPU:
    """One catalog entry: the datasheet of a GPU model."""

    name: str  # catalog name, e.g. "H100 SXM"
    aliases: tuple[str, ...]  # other names `gpu()` accepts, e.g. "h100"
    device_names: tuple[str, ...]  # what torch.cuda.get_device_name() prints for this card
    architecture: str  # "Turing", "Ampere", "Ada Lovelace", "Hopper"
    compute_capability: tuple[int, int]  # (major, minor), e.g. (9, 0)
    memory_gb: float  # capacity as printed on the datasheet ("80 GB"), which is GiB of DRAM
    memory_type: str  # "HBM3", "GDDR6", ...
    ecc_reserve_fraction: float  # share of DRAM that inline ECC takes when on by default (1/16 on datacenter GDDR6)
    total_memory_bytes: int | None  # torch.cuda.get_device_properties().total_memory where measured, else None
    bandwidth_gb_s: float  # peak DRAM bandwidth, GB/s (10**9 B/s)
    tflops: dict = field(hash=False)  # dense peak TFLOPS (TOPS for ints) by format; absent = no tensor-core path
    native_formats: tuple[str, ...] = ()  # matmul input formats the hardware runs natively
    source: str = ""  # the datasheet (and any derivation) these figures come from
    total_memory_source: str = ""  # where total_memory_bytes was measured (machine, date, versions)

    @property
    def memory_bytes(self) -> int:
        """The DRAM behind the datasheet figure: memory_gb x 2**30 bytes."""
        return round(self.memory_gb * GiB)

    @property
    def memory_measured(self) -> bool:
        """True when `usable_memory_bytes` is torch's own figure, False when it is estimated."""
        return self.total_memory_bytes is not None

    @property
    def usable_memory_bytes(self) -> int:
        """What torch reports as total_memory (vLLM's gpu_memory_utilization multiplies this): measured or estimated."""
        if self.total_memory_bytes is not None:
            return self.total_memory_bytes
        return int(self.memory_bytes * (1 - self.ecc_reserve_fraction) * (1 - DRIVER_RESERVE_FRACTION))

    @property
    def capability_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class DeviceInfo:
    """The device this Python process would compute on."""

    kind: str  # "cuda" or "cpu"
    name: str  # torch's device name ("NVIDIA H100 80GB HBM3") or the CPU model
    compute_capability: tuple[int, int] | None  # (major, minor) for CUDA, None for CPU
    total_memory_bytes: int | None  # GPU: torch's total_memory; CPU: physical RAM
    free_memory_bytes: int | None  # GPU: cudaMemGetInfo free; CPU: MemAvailable
    device_count: int  # CUDA devices visible (0 on CPU)
    catalog: GPU | None  # the matching catalog entry, if any
    torch_version: str  # torch.__version__
    cuda_version: str | None  # torch.version.cuda (None on CPU builds)

    def describe(self) -> str:
        """One line: what this device is."""
        if self.kind == "cpu":
            memory = f", {self.total_memory_bytes / GiB:.1f} GiB RAM" if self.total_memory_bytes else ""
            return f"cpu ({self.name}{memory})"
        capability = f"{self.compute_capability[0]}.{self.compute_capability[1]}"
        matched = f" = catalog '{self.catalog.name}'" if self.catalog else " (not in the catalog)"
        return (f"cuda:0 ({self.name}, cc {capability}, {self.total_memory_bytes / GiB:.1f} GiB, "
                f"{self.free_memory_bytes / GiB:.1f} GiB free{matched})")


# --------------------------------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _catalog() -> tuple[GPU, ...]:
    """Every GPU in data/gpus.json, in file order."""
    entries = json.loads((data_dir() / CATALOG_FILE).read_text())["gpus"]
    return tuple(_from_entry(entry) for entry in entries)


def _from_entry(entry: dict) -> GPU:
    major, minor = (int(part) for part in entry["compute_capability"].split("."))
    return GPU(name=entry["name"], aliases=tuple(entry.get("aliases", ())),
               device_names=tuple(entry.get("device_names", ())), architecture=entry["architecture"],
               compute_capability=(major, minor), memory_gb=entry["memory_gb"], memory_type=entry["memory_type"],
               ecc_reserve_fraction=entry.get("ecc_reserve_fraction", 0),
               total_memory_bytes=entry["total_memory_bytes"],
               bandwidth_gb_s=entry["bandwidth_gb_s"], tflops=dict(entry["tflops"]),
               native_formats=tuple(entry["native_formats"]), source=entry["source"],
               total_memory_source=entry.get("total_memory_source", ""))


def _key(name: str) -> str:
    """A name reduced for matching: lower case, no vendor words, no spaces, dashes or underscores."""
    text = re.sub(r"\b(nvidia|geforce|tesla)\b", "", name.lower())
    return re.sub(r"[\s_\-]+", "", text)


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, GPU]:
    """Matching key -> GPU, for names and aliases."""
    index: dict[str, GPU] = {}
    for entry in _catalog():
        for name in (entry.name, *entry.aliases):
            index.setdefault(_key(name), entry)
    return index


def gpu_names() -> list[str]:
    """Catalog names, in catalog order (small to large, roughly)."""
    return [entry.name for entry in _catalog()]


def gpu(name: str | GPU) -> GPU:
    """The catalog entry for `name` (case-insensitive; aliases like "h100" -> H100 SXM, "a100" -> A100 80GB)."""
    if isinstance(name, GPU):
        return name
    index = _index()
    found = index.get(_key(str(name)))
    if found is not None:
        return found
    closest = difflib.get_close_matches(_key(str(name)), list(index), n=6, cutoff=0.5)
    suggestions = list(dict.fromkeys(index[key].name for key in closest))[:3] or gpu_names()
    raise LookupError(f"unknown GPU {name!r}; closest: {', '.join(suggestions)} "
                      f"(all: llmlab.hardware.gpu_names())")


def supports(device: str | GPU, precision: str) -> bool:
    """Whether `device`'s hardware runs `precision` natively as a matmul input (tensor cores; fp32 on CUDA cores)."""
    if precision == "nf4":
        raise ValueError("nf4 is a weight-only storage format, dequantized to 16-bit to multiply: ask about 'fp16' "
                         "(llmlab.memory.FORMATS[name].matmul says which format each precision multiplies in)")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision in gpu(device).native_formats


def native_formats_for(compute_capability: tuple[int, int]) -> tuple[str, ...]:
    """The formats the rule table gives a compute capability (the catalog's `native_formats` must agree)."""
    return tuple(precision for precision in PRECISIONS
                 if FORMAT_MIN_CAPABILITY[precision] <= compute_capability
                 and compute_capability <= FORMAT_MAX_CAPABILITY.get(precision, (99, 9)))


def match_device(device_name: str, total_memory_bytes: int | None = None) -> GPU | None:
    """The catalog entry torch's device name refers to; None when unknown or when its memory rules it out."""
    key = _key(device_name)
    candidates = [entry for entry in _catalog() if key in {_key(name) for name in entry.device_names}]
    if not candidates:  # e.g. "NVIDIA L40S-48C" (a vGPU profile): catalog names inside it, the longest first
        inside = [entry for entry in _catalog() if _key(entry.name) in key]
        candidates = sorted(inside, key=lambda entry: -len(_key(entry.name)))
    for entry in candidates:
        # one name, two memory sizes (RTX 4060 Ti 8 GB/16 GB): the datasheet capacity must be within 15 %
        if total_memory_bytes is None or abs(total_memory_bytes / entry.memory_bytes - 1) < 0.15:
            return entry
    return None


# --------------------------------------------------------------------------------------------------------------
# The local device
# --------------------------------------------------------------------------------------------------------------


def detect() -> DeviceInfo:
    """The device this process would use: the first CUDA GPU if torch sees one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        return DeviceInfo(kind="cuda", name=properties.name, compute_capability=(properties.major, properties.minor),
                          total_memory_bytes=properties.total_memory, free_memory_bytes=free,
                          device_count=torch.cuda.device_count(),
                          catalog=match_device(properties.name, properties.total_memory),
                          torch_version=torch.__version__, cuda_version=torch.version.cuda)
    total, available = _system_memory()
    return DeviceInfo(kind="cpu", name=_cpu_name(), compute_capability=None, total_memory_bytes=total,
                      free_memory_bytes=available, device_count=0, catalog=None, torch_version=torch.__version__,
                      cuda_version=torch.version.cuda)


def pick_device(prefer: str = "cuda"):
    """The torch.device the notebooks compute on, after printing one line saying which and why.

    prefer="cuda" takes the first CUDA GPU when there is one, else the CPU; prefer="cpu" takes the CPU.
    The environment variable LLMLAB_DEVICE (cuda or cpu) overrides `prefer`.
    """
    import torch

    forced = os.environ.get(DEVICE_ENVIRONMENT)
    choice = (forced or prefer).lower()
    if choice not in ("cuda", "cpu"):
        source = f"{DEVICE_ENVIRONMENT}={forced}" if forced else f"prefer={prefer!r}"
        raise ValueError(f"{source} is not a device this course uses; choose 'cuda' or 'cpu'")
    info = detect()
    because = f"{DEVICE_ENVIRONMENT}={forced}" if forced else f"prefer={prefer!r}"
    if choice == "cuda" and info.kind == "cuda":
        print(f"device: {info.describe()}; {because}")
        return torch.device("cuda", 0)
    if choice == "cuda":
        print(f"device: {info.describe()}; {because} but torch {info.torch_version} sees no CUDA GPU, "
              "so GPU-only cells will show stored results")
    else:
        print(f"device: {info.describe()}; {because}")
    return torch.device("cpu")


def _system_memory() -> tuple[int | None, int | None]:
    """(physical RAM, available RAM) in bytes, from /proc/meminfo where there is one."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        return (int(fields["MemTotal"].split()[0]) * 1024, int(fields["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), None
        except (ValueError, OSError, AttributeError):
            return None, None


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"
