"""The `llmlab` command: one subcommand per verb (`llmlab plan ...`).

Adding a verb: write `_add_<verb>(subcommands)` that registers its arguments and sets `handler` to a function
`(args) -> int`, and call it from `build_parser`. Keep heavy imports (torch, transformers) inside the handler so
that every verb starts fast. Users' mistakes raise ValueError / LookupError / FileNotFoundError: `main` turns them
into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

GiB = 2**30
GB = 10**9
USER_ERRORS = (ValueError, LookupError, FileNotFoundError)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmlab", description="Size, quantize and serve LLMs: the tools behind the llmlab course.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_plan(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        print("llmlab: error: name a command, e.g. `llmlab plan llama-3.1-8b` (see llmlab --help)", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, KeyError):  # LookupError's subclass quotes its message
            message = message.strip("'\"")
        print(f"llmlab {args.command}: error: {message}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------------------
# llmlab plan
# --------------------------------------------------------------------------------------------------------------


def _add_plan(subcommands) -> None:
    from llmlab.memory import FORMATS, KV_DTYPES, RUNTIME  # light: no torch, no transformers

    command = subcommands.add_parser(
        "plan", help="memory a model needs and whether it fits a GPU",
        description="Weights, KV cache, activations and overhead of MODEL at one precision, context and batch; "
                    "with --gpu, whether it fits, the longest context and the most concurrent sequences.")
    command.add_argument("model", metavar="MODEL",
                         help="catalog name (llama-3.1-8b ...), a config.json or a folder holding one, or a hub id")
    command.add_argument("--precision", choices=list(FORMATS), default="fp16", help="weight format (default fp16)")
    command.add_argument("--kv-dtype", choices=list(KV_DTYPES), default="fp16", help="KV cache dtype (default fp16)")
    command.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    command.add_argument("--batch", type=int, default=1, help="concurrent sequences (default 1)")
    command.add_argument("--gpu", help="catalog GPU: h100, a100, l4, t4, rtx-4090 ... (see llmlab.hardware.gpu_names)")
    command.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (default 1)")
    command.add_argument("--group-size", type=int, default=128, help="int4 group size (default 128)")
    command.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                         help="share of GPU memory the engine may use (vLLM's default 0.9)")
    command.add_argument("--prefill-chunk", type=int, default=RUNTIME.prefill_chunk,
                         help="tokens per forward pass (vLLM's max_num_batched_tokens, default "
                              f"{RUNTIME.prefill_chunk}); 0 = the whole batch x context at once, as transformers' "
                              "generate does")
    command.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    command.set_defaults(handler=_plan_command)


def _plan_command(args) -> int:
    from dataclasses import replace

    from llmlab.memory import RUNTIME, plan

    if args.prefill_chunk < 0:
        raise ValueError(f"--prefill-chunk must be a positive number of tokens or 0 (no chunking), "
                         f"not {args.prefill_chunk}")
    runtime = replace(RUNTIME, prefill_chunk=args.prefill_chunk or None)
    result = plan(args.model, precision=args.precision, kv_dtype=args.kv_dtype, context=args.context,
                  batch=args.batch, gpu=args.gpu, tp=args.tp, gpu_memory_utilization=args.gpu_memory_utilization,
                  group_size=args.group_size, runtime=runtime)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_plan(result))
    return 0


def format_plan(plan) -> str:
    """A plan as a short table: GiB (2**30) and GB (10**9, the guide's "Go")."""
    breakdown = plan.weight_breakdown
    lines = [
        f"{plan.model}: {plan.precision} weights, {plan.kv_dtype} KV cache, context {plan.context:,} x batch "
        f"{plan.batch:,}, tp {plan.tp}",
        f"params {plan.params:,}" + (f" (active {plan.active_params:,})" if plan.active_params != plan.params else ""),
        "",
        f"{'':<14}{'GiB':>9}{'GB':>9}",
        _row("weights", plan.weight_bytes, f"quantized {breakdown['quantized_bytes'] / GB:.2f} GB, "
                                           f"scales {breakdown['scale_bytes'] / GB:.2f} GB, "
                                           f"16-bit {breakdown['kept_bytes'] / GB:.2f} GB"),
        _row("KV cache", plan.kv_bytes, f"{plan.kv_bytes_per_token:,} B per token"),
        _row("activations", plan.activation_bytes, f"per GPU, prefill of {plan.prefill_tokens:,} tokens"),
        _row("overhead", plan.overhead_bytes, "per GPU: CUDA context, allocator" + (", NCCL" if plan.tp > 1 else "")),
        _row("total", plan.total_bytes, f"{plan.tp} GPUs" if plan.tp > 1 else ""),
    ]
    if plan.tp > 1:
        lines.append(_row("per GPU", plan.per_gpu_bytes, "weights and KV split over tp"))
    if plan.gpu:
        measured = "measured" if plan.gpu_memory_measured else "estimated"
        verdict = (f"fits, {plan.headroom_bytes / GiB:.2f} GiB to spare" if plan.fits
                   else f"does NOT fit, {-plan.headroom_bytes / GiB:.2f} GiB over")
        gpus = f"{plan.tp}x " if plan.tp > 1 else ""
        lines += ["", f"{gpus}{plan.gpu}: budget {plan.budget_bytes / GiB:.2f} GiB per GPU "
                      f"({plan.gpu_memory_utilization:g} x {plan.gpu_memory_bytes / GiB:.2f} GiB, {measured}): {verdict}",
                  f"  max context at batch {plan.batch}: {plan.max_context:,} tokens (limited by "
                  f"{plan.max_context_limited_by})",
                  f"  max concurrency at context {plan.context:,}: {plan.max_concurrency:,} "
                  f"sequence{'' if plan.max_concurrency == 1 else 's'}"]
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def _row(label: str, size: int, note: str) -> str:
    return f"{label:<14}{size / GiB:>9.2f}{size / GB:>9.2f}" + (f"   {note}" if note else "")


if __name__ == "__main__":
    sys.exit(main())
