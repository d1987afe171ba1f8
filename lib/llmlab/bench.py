"""`make bench` / `python -m llmlab.bench`: the speed and memory figures of the foundation, printed and stored.

Measured, never asserted (timed tests are flaky on a shared 2-core machine): `llmlab plan` latency, the embedded model's
cold (GGUF dequantization) and warm (cached safetensors) load, and each notebook's wall time and peak RSS when executed
top to bottom in a fresh kernel (goals: ≤ 90 s and ≤ 2 GB each, Binder-sized). Stored in data/results/bench-cpu.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmlab.paths import REPO_ROOT
from llmlab.results import save_result

NOTEBOOK_RUNNER = """
import resource, sys, time, nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
start = time.perf_counter()
NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
seconds = time.perf_counter() - start
peak_kib = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(f"{seconds:.2f} {peak_kib}")
"""


def time_command(argv: list[str], repeats: int = 5) -> dict:
    """Wall seconds of a command line: the first run with an empty llmlab cache (the config is read through
    transformers), then the median and min of `repeats` warm runs (the spec comes from the cache)."""
    cache = Path(tempfile.mkdtemp(prefix="llmlab-bench-cache-"))
    env = {**os.environ, "LLMLAB_CACHE": str(cache)}
    seconds = []
    try:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env=env)
            seconds.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    cold, warm = seconds[0], seconds[1:]
    return {"cold_s": cold, "median_s": statistics.median(warm), "min_s": min(warm), "runs": repeats}


def model_loads() -> dict:
    """Cold load (dequantize the GGUF into a fresh cache) and warm load (from that cache), each in a new process."""
    cache = Path(tempfile.mkdtemp(prefix="llmlab-bench-cache-"))
    env = {**os.environ, "LLMLAB_CACHE": str(cache)}
    code = "from llmlab.zoo import load_model; print(load_model()[2].seconds)"
    try:
        cold = float(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout.split()[-1])
        warm = [float(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout.split()[-1])
                for _ in range(3)]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"cold_load_s": cold, "warm_load_s": statistics.median(warm)}


def notebooks(budget: str) -> dict:
    """Wall time and peak RSS (the kernel included) of each notebook, each executed once in a fresh process."""
    figures = {}
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        env = {**os.environ, "LLMLAB_BUDGET": budget}
        out = subprocess.run([sys.executable, "-c", NOTEBOOK_RUNNER, str(path), str(path.parent)], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            figures[path.name] = {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
            continue
        seconds, peak_kib = out.stdout.split()[-2:]
        figures[path.name] = {"seconds": float(seconds), "peak_rss_mib": int(peak_kib) / 1024}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=("small", "full"), default="full", help="notebook budget to time")
    parser.add_argument("--skip-notebooks", action="store_true", help="only the CLI and model-load figures")
    args = parser.parse_args(argv)
    llmlab_cli = shutil.which("llmlab") or str(Path(sys.executable).with_name("llmlab"))
    figures = {
        "plan_latency": time_command([llmlab_cli, "plan", "llama-3.1-8b", "--json"]),
        "plan_latency_config_json": time_command([llmlab_cli, "plan", str(REPO_ROOT / "data" / "models" / "qwen3-30b-a3b.json"), "--json"]),
        **model_loads(),
    }
    if not args.skip_notebooks:
        figures["notebooks"] = notebooks(args.budget)
        figures["notebook_budget"] = args.budget
    path = save_result("bench-cpu", figures, command=f"python -m llmlab.bench --budget {args.budget}")
    print(f"{'figure':44s} value")
    for label, key in (("llmlab plan llama-3.1-8b --json", "plan_latency"),
                       ("llmlab plan <config.json> --json", "plan_latency_config_json")):
        row = figures[key]
        print(f"{label:44s} {row['cold_s']:.2f} s first, {row['median_s']:.2f} s warm (median of {row['runs']})")
    print(f"{'embedded model, cold load (GGUF → cache)':44s} {figures['cold_load_s']:.1f} s")
    print(f"{'embedded model, warm load (safetensors)':44s} {figures['warm_load_s']:.2f} s")
    for name, row in figures.get("notebooks", {}).items():
        text = row.get("error") or f"{row['seconds']:.1f} s, peak RSS {row['peak_rss_mib']:.0f} MiB"
        print(f"{name:44s} {text}")
    print(f"stored in {path}")


if __name__ == "__main__":
    main()
