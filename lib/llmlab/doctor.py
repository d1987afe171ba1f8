"""`llmlab doctor`: the pre-workshop check a facilitator runs on every seat.

It reports Python, torch and CUDA versions, the GPU (name, compute capability, the formats its tensor cores run
natively), free memory and disk, whether the embedded model is cached, and, chapter by chapter (data/chapters.json),
what will run live here and what will show the stored GPU results instead. Human-readable by default, `--json` for
scripts; `--prepare` caches the embedded model first. Exit code 1 when something a chapter needs is missing, so a
script can loop over seats: `llmlab doctor --json > seat.json || echo "seat not ready"`.

Each finding is a `Finding` with a level: "ok", "warn" (runs, but slower or with less shown live) or "fail"
(a chapter cannot run). The chapter verdicts are a pure function of the chapter table and the device
(`chapter_verdict`), tested on catalog GPUs without owning them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

GiB = 2**30
MIN_PYTHON = (3, 10)
MODEL_CACHE_BYTES = 600 * 2**20  # the embedded model as float32 safetensors (517 MiB measured) plus its tokenizer
# packages every chapter imports (the library's own dependencies and JupyterLab with its widget manager)
REQUIRED = ("torch", "transformers", "accelerate", "gguf", "safetensors", "numpy", "matplotlib", "ipywidgets",
            "jupyterlab", "jupyterlab_widgets")
# packages some chapters need, and which (pyproject extras `quant` and `serving`)
BY_CHAPTER = {"bitsandbytes": ("04",), "llmcompressor": ("05", "06", "07", "08"),
              "fastapi": ("10",), "uvicorn": ("10",), "openai": ("10",)}
LEVELS = ("ok", "warn", "fail")


@dataclass
class Finding:
    """One line of the report."""

    name: str  # what was checked: "python", "torch", "gpu", "embedded model", ...
    level: str  # "ok", "warn" (works, with less live or slower) or "fail" (a chapter cannot run)
    value: str  # what was found
    fix: str = ""  # what to do about a warn or fail


@dataclass
class ChapterVerdict:
    """What one chapter does on this machine."""

    number: str  # "00" ... "11"
    title: str  # from data/chapters.json
    mode: str  # "live", "live, some GPU cells stored" or "CPU live, GPU cells stored"
    detail: str  # why, in one line
    level: str  # "fail" when this machine lacks the RAM or a package the chapter needs


@dataclass
class Report:
    """Everything `llmlab doctor` found; `ok` is False when any finding failed."""

    findings: list[Finding] = field(default_factory=list)  # one per check, in report order
    chapters: list[ChapterVerdict] = field(default_factory=list)  # one per chapter of data/chapters.json
    device: dict = field(default_factory=dict)  # kind, name, compute capability, native formats, memory, count
    versions: dict = field(default_factory=dict)  # python, torch, cuda, transformers, ... (None when missing)
    seconds: float = 0.0  # how long the check took

    @property
    def ok(self) -> bool:
        return not any(item.level == "fail" for item in [*self.findings, *self.chapters])

    def to_dict(self) -> dict:
        return {"ok": self.ok, "device": self.device, "versions": self.versions,
                "findings": [asdict(item) for item in self.findings],
                "chapters": [asdict(item) for item in self.chapters], "seconds": round(self.seconds, 2)}


# --------------------------------------------------------------------------------------------------------------
# Pure parts: formats and chapter verdicts
# --------------------------------------------------------------------------------------------------------------


def native_formats(compute_capability: tuple[int, int] | None, catalog=None) -> tuple[str, ...]:
    """Matmul formats the device's tensor cores run natively: the catalog entry's, else the compute-capability rule;
    none on a CPU (every format runs there, emulated)."""
    if compute_capability is None:
        return ()
    if catalog is not None:
        return tuple(catalog.native_formats)
    from llmlab.hardware import native_formats_for

    return native_formats_for(tuple(compute_capability))


def gpu_path_line(name: str, compute_capability: tuple[int, int], formats: tuple[str, ...]) -> str:
    """One sentence on what a GPU's cells will do, e.g. for a Colab T4: no FP8, no bf16 tensor cores."""
    missing = []
    if "bf16" not in formats:
        missing.append("no bf16 tensor cores (16-bit cells use fp16)")
    if "fp8" not in formats:
        missing.append("no FP8 (FP8 cells show the stored H100 run)")
    capability = f"{compute_capability[0]}.{compute_capability[1]}"
    return (f"{name}, compute capability {capability}: native {', '.join(formats) or 'none'}"
            + (f"; {'; '.join(missing)}" if missing else ""))


def chapter_verdict(chapter, kind: str, formats: tuple[str, ...], available_ram_bytes: int | None,
                    missing_packages: tuple[str, ...] = (),
                    compute_capability: tuple[int, int] | None = None) -> ChapterVerdict:
    """What `chapter` (llmlab.course.Chapter) does on a device of `kind` ("cpu"/"cuda") with these native formats.

    A format the chapter runs through a real kernel (`llmlab.quant.kernels`) also needs that kernel's compute
    capability: torch's int4 weight kernel wants 8.0, so a T4 (7.5) shows the stored run although it has fp16."""
    from llmlab.memory import FORMATS
    from llmlab.quant.kernels import MIN_COMPUTE_CAPABILITY

    if chapter.gpu is None:
        mode, detail = "live", "CPU is enough: everything runs here"
    elif kind != "cuda":
        mode, detail = "CPU live, GPU cells stored", f"GPU cells show the stored H100 results (live: {chapter.gpu})"
    else:
        kernel_too_new = {name for name in chapter.formats if compute_capability is not None
                          and tuple(compute_capability) < MIN_COMPUTE_CAPABILITY.get(name, (0, 0))}
        lacking = sorted({name for name in chapter.formats if FORMATS[name].matmul not in formats} | kernel_too_new)
        if lacking:
            mode = "live, some GPU cells stored"
            detail = f"no native {', '.join(lacking)} matmul here: those cells show the stored H100 results"
        else:
            mode, detail = "live", "every cell runs live on this GPU"
    level = "ok"
    if available_ram_bytes is not None and available_ram_bytes < chapter.ram_gib * GiB:
        level, detail = "fail", (f"needs {chapter.ram_gib:g} GiB of RAM, {available_ram_bytes / GiB:.1f} GiB "
                                 f"available; {detail}")
    if missing_packages:
        level, detail = "fail", f"missing {', '.join(missing_packages)} (pip install -e '.[quant,serving]'); " + detail
    return ChapterVerdict(chapter.number, chapter.title, mode, detail, level)


# --------------------------------------------------------------------------------------------------------------
# Gathering
# --------------------------------------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> str | None:
    """'NAME, DRIVER' of the first GPU the driver sees, or None (no driver, no GPU)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def gather(prepare: bool = False) -> Report:
    """Check this machine; with `prepare`, cache the embedded model first (about 25 s once)."""
    start = time.perf_counter()
    report = Report()
    add = report.findings.append

    python = platform.python_version()
    report.versions["python"] = python
    add(Finding("python", "ok" if sys.version_info[:2] >= MIN_PYTHON else "fail", f"{python} ({sys.executable})",
                "" if sys.version_info[:2] >= MIN_PYTHON else "llmlab needs Python >= 3.10"))

    versions = {name: _version(name) for name in (*REQUIRED, *BY_CHAPTER)}
    report.versions.update(versions)
    missing = [name for name in REQUIRED if versions[name] is None]
    add(Finding("packages", "fail" if missing else "ok",
                f"missing: {', '.join(missing)}" if missing else
                ", ".join(f"{name} {versions[name]}" for name in REQUIRED if name != "torch"),
                "run `make install` (or pip install -e '.[course]')" if missing else ""))
    optional_missing = [name for name in BY_CHAPTER if versions[name] is None]
    if optional_missing:
        add(Finding("chapter packages", "fail", f"missing: {', '.join(optional_missing)}",
                    "pip install -e '.[quant,serving]' (scripts/install.sh does it)"))

    report.device = _device(report, add)
    _model(prepare, add)

    from llmlab.course import chapters

    available = report.device.get("ram_available_bytes")
    for chapter in chapters():
        needs = tuple(name for name, numbers in BY_CHAPTER.items() if chapter.number in numbers
                      and versions[name] is None)
        capability = report.device.get("compute_capability")
        report.chapters.append(chapter_verdict(chapter, report.device["kind"], tuple(report.device["native_formats"]),
                                               available, needs, tuple(capability) if capability else None))
    report.seconds = time.perf_counter() - start
    return report


def _device(report: Report, add) -> dict:
    """torch, CUDA and the device; RAM and disk."""
    from llmlab.hardware import _system_memory

    total_ram, available_ram = _system_memory()
    device = {"kind": "cpu", "name": None, "compute_capability": None, "native_formats": [], "gpu_count": 0,
              "gpu_memory_bytes": None, "gpu_free_bytes": None, "catalog": None, "driver": None,
              "ram_total_bytes": total_ram, "ram_available_bytes": available_ram}
    smi = _nvidia_smi()
    device["driver"] = smi.rsplit(",", 1)[-1].strip() if smi else None
    try:
        import torch  # noqa: F401

        from llmlab.hardware import detect
    except ImportError as error:
        add(Finding("torch", "fail", f"cannot import torch: {error}", "run `make install`"))
        return device
    info = detect()
    report.versions["torch"], report.versions["cuda"] = info.torch_version, info.cuda_version
    build = f"CUDA {info.cuda_version} build" if info.cuda_version else "CPU build"
    if info.kind == "cuda":
        formats = native_formats(info.compute_capability, info.catalog)
        device.update(kind="cuda", name=info.name, compute_capability=list(info.compute_capability),
                      native_formats=list(formats), gpu_count=info.device_count,
                      gpu_memory_bytes=info.total_memory_bytes, gpu_free_bytes=info.free_memory_bytes,
                      catalog=info.catalog.name if info.catalog else None)
        add(Finding("torch", "ok", f"{info.torch_version} ({build}, driver {device['driver'] or 'unknown'})"))
        catalog = (f", catalog '{info.catalog.name}'" if info.catalog else
                   " (not in the catalog: formats from the compute capability)")
        add(Finding("gpu", "ok", gpu_path_line(info.name, info.compute_capability, formats)
                    + f"; {info.device_count} visible{catalog}"))
        add(Finding("gpu memory", "ok", f"{info.free_memory_bytes / GiB:.1f} GiB free of "
                                        f"{info.total_memory_bytes / GiB:.1f} GiB"))
    else:
        device["name"] = info.name
        if smi:  # a GPU the driver sees but torch does not: the wrong wheel, the commonest workshop surprise
            add(Finding("torch", "fail", f"{info.torch_version} ({build}) does not see the GPU nvidia-smi shows "
                                         f"({smi})", "install torch's CUDA build: pip install torch (from PyPI, "
                                                     "not the CPU index), then rerun llmlab doctor"))
        else:
            add(Finding("torch", "ok", f"{info.torch_version} ({build})"))
        add(Finding("gpu", "warn", "none: GPU cells show the stored H100 results",
                    "fine for every chapter; a CUDA GPU makes the GPU cells live"))
    level = "ok" if available_ram is None or available_ram >= 2 * GiB else "warn"
    found = (f"{(available_ram or 0) / GiB:.1f} GiB available of {total_ram / GiB:.1f} GiB" if total_ram
             else "unknown")
    add(Finding("memory", level, found, "" if level == "ok" else "close other programs: chapters need up to 2 GiB"))
    return device


def _model(prepare: bool, add) -> None:
    """The embedded model: cached, or at least its GGUF installed; disk for the cache."""
    from llmlab.paths import cache_dir
    from llmlab.zoo import INSTALL_HINT, embedded_cache, find_gguf, prepare_embedded

    folder = embedded_cache()
    free = shutil.disk_usage(cache_dir()).free
    cached = (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    if prepare and not cached:
        start = time.perf_counter()
        try:
            prepare_embedded()
            cached = True
            add(Finding("prepare", "ok", f"embedded model cached in {time.perf_counter() - start:.0f} s"))
        except (FileNotFoundError, OSError) as error:
            add(Finding("prepare", "fail", str(error).splitlines()[0], INSTALL_HINT))
    need = 0 if cached else MODEL_CACHE_BYTES
    add(Finding("disk", "ok" if free >= need + GiB else "fail" if free < need else "warn",
                f"{free / GiB:.1f} GiB free in {cache_dir()}",
                "" if free >= need + GiB else "free some disk (the cached model takes about 0.6 GB) or set "
                                               "LLMLAB_CACHE to a bigger disk"))
    if cached:
        size = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
        add(Finding("embedded model", "ok", f"cached ({size / 2**20:.0f} MiB in {folder})"))
        return
    try:
        gguf = find_gguf()
        add(Finding("embedded model", "warn", f"not cached yet (GGUF at {gguf}); the first chapter that loads it "
                                              "converts it (about 25 s)", "llmlab doctor --prepare"))
    except FileNotFoundError:
        add(Finding("embedded model", "fail", "not cached and its GGUF is not installed", INSTALL_HINT))


# --------------------------------------------------------------------------------------------------------------
# Output and command line
# --------------------------------------------------------------------------------------------------------------


def render(report: Report) -> str:
    """The report for a person: one line per finding, then one per chapter, then the verdict."""
    width = max(len(item.name) for item in report.findings)
    lines = ["llmlab doctor: is this seat ready for the course?", ""]
    for item in report.findings:
        lines.append(f"  {item.level.upper():4s}  {item.name:{width}s}  {item.value}")
        if item.fix and item.level != "ok":
            lines.append(f"  {'':4s}  {'':{width}s}  → {item.fix}")
    lines += ["", "chapters (data/chapters.json):"]
    mode_width = max((len(chapter.mode) for chapter in report.chapters), default=0)
    for chapter in report.chapters:
        mark = "" if chapter.level == "ok" else f"{chapter.level.upper()}: "
        lines.append(f"  {chapter.number}  {chapter.mode:{mode_width}s}  {mark}{chapter.detail}  ({chapter.title})")
    problems = [item for item in [*report.findings, *report.chapters] if item.level == "fail"]
    warnings = [item for item in report.findings if item.level == "warn"]
    lines.append("")
    if problems:
        lines.append(f"NOT READY: {len(problems)} problem(s) above (FAIL); exit code 1")
    else:
        lines.append(f"ready ({len(warnings)} warning(s)); checked in {report.seconds:.1f} s")
    return "\n".join(lines)


def _arguments(command) -> None:
    command.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    command.add_argument("--prepare", action="store_true",
                         help="cache the embedded model first (about 25 s once; what `make install` does)")


def add_parser(subcommands) -> None:
    """Register `llmlab doctor` on the CLI's subcommands (llmlab.cli.build_parser)."""
    command = subcommands.add_parser(
        "doctor", help="pre-workshop check: versions, GPU and its native formats, memory, disk, model cache, chapters",
        description="Check this machine for the course: Python, torch and CUDA, the GPU and the formats it runs "
                    "natively, free memory and disk, the embedded model's cache, and what each chapter runs live. "
                    "Exit code 1 when something a chapter needs is missing.")
    _arguments(command)
    command.set_defaults(handler=doctor_command)


def doctor_command(args) -> int:
    """Run the checks and print them; 0 when the seat is ready, 1 when something a chapter needs is missing."""
    report = gather(prepare=args.prepare)
    print(json.dumps(report.to_dict(), indent=1) if args.json else render(report))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m llmlab.doctor [--json] [--prepare]`, the same as `llmlab doctor`."""
    parser = argparse.ArgumentParser(prog="llmlab doctor", description="Pre-workshop check for the llmlab course.")
    _arguments(parser)
    return doctor_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
