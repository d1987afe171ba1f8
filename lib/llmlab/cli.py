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

from llmlab import doctor

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
    _add_serve_local(subcommands)
    _add_bench(subcommands)
    _add_paged_sim(subcommands)
    _add_serve_cmd(subcommands)
    _add_quantize_matrix(subcommands)
    doctor.add_parser(subcommands)
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



# --------------------------------------------------------------------------------------------------------------
# llmlab serve-local, llmlab bench
# --------------------------------------------------------------------------------------------------------------


def _add_server_arguments(command, model_flag: str = "--model") -> None:
    """The arguments that start a local server (serve-local, and bench --local)."""
    command.add_argument(model_flag, dest="server_model", default="embedded",
                         help="'embedded' (the course's model, default), a local model folder, or for llama.cpp a .gguf")
    command.add_argument("--engine", choices=["transformers", "llama.cpp"], default="transformers",
                         help="transformers serve (default) or llama-cpp-python's server")
    command.add_argument("--no-continuous-batching", dest="continuous_batching", action="store_false",
                         help="transformers: one request at a time (default: continuous batching)")
    command.add_argument("--threads", type=int, help="CPU threads of the server (default: all cores but one)")
    command.add_argument("--cb-block-size", type=int, default=32, help="tokens per KV block (default 32)")
    command.add_argument("--cb-num-blocks", type=int, default=128, help="KV blocks (default 128: 4,096 tokens)")
    command.add_argument("--cb-max-batch-tokens", type=int, default=512,
                         help="tokens per forward pass (default 512)")
    command.add_argument("--ready-timeout", type=float, default=120.0,
                         help="seconds to wait for the model to load (default 120)")


def _server_settings(args):
    from llmlab.serving.local import ServerSettings

    return ServerSettings(model=args.server_model, engine=args.engine, port=getattr(args, "port", None),
                          continuous_batching=args.continuous_batching, threads=args.threads,
                          cb_block_size=args.cb_block_size, cb_num_blocks=args.cb_num_blocks,
                          cb_max_batch_tokens=args.cb_max_batch_tokens, ready_timeout=args.ready_timeout)


def _add_serve_local(subcommands) -> None:
    command = subcommands.add_parser(
        "serve-local", help="serve the embedded model on 127.0.0.1 (OpenAI-compatible, continuous batching)",
        description="Start `transformers serve` (or llama.cpp's server) on 127.0.0.1 with the embedded model, print "
                    "its URL, and stop it cleanly on Ctrl-C, SIGTERM or after --duration seconds. Needs "
                    "`pip install \"transformers[serving]\"` (llama.cpp: \"llama-cpp-python[server]\").")
    _add_server_arguments(command)
    command.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    command.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")
    command.set_defaults(handler=_serve_local_command)


def _serve_local_command(args) -> int:
    import signal
    import time

    from llmlab.serving.local import local_server

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the server as Ctrl-C does
    try:
        with local_server(_server_settings(args)) as server:
            mode = ("continuous batching" if args.continuous_batching else "one request at a time") \
                if args.engine == "transformers" else "llama.cpp"
            print(f"serving {server.model} at {server.base_url} ({args.engine}, {mode}); ready in "
                  f"{server.ready_seconds:.1f} s; log: {server.log_path}", flush=True)
            print(f"try: llmlab bench --base-url {server.base_url} --backend {server.backend} --requests 16",
                  flush=True)
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while server.alive() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
            if not server.alive():
                print(f"llmlab serve-local: the server exited with code {server.process.returncode}; the end of "
                      f"its log:\n{server.log_tail()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    except (ModuleNotFoundError, RuntimeError, TimeoutError) as error:
        print(f"llmlab serve-local: error: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("server stopped", flush=True)
    return 0


def _add_bench(subcommands) -> None:
    command = subcommands.add_parser(
        "bench", help="load-test an OpenAI-compatible server: TTFT, TPOT, ITL, latency percentiles, throughput",
        description="Streaming requests against --base-url (transformers serve, vLLM, trtllm-serve, llama.cpp) or "
                    "against a local server started for the run (--local, always stopped afterwards). Metric names "
                    "are vLLM's (`vllm bench serve`). Failed requests are counted with their reasons; the exit code "
                    "is 1 when any request failed.")
    target = command.add_mutually_exclusive_group(required=True)
    target.add_argument("--base-url", help="the server, e.g. http://127.0.0.1:8000 (without /v1)")
    target.add_argument("--local", action="store_true", help="start the embedded model's local server for this run")
    command.add_argument("--requests", type=int, default=50, help="requests in all (default 50)")
    command.add_argument("--concurrency", type=int, default=8, help="most requests in flight at once (default 8)")
    command.add_argument("--request-rate", type=float, default=float("inf"),
                         help="new requests per second, Poisson arrivals (default inf: all at once)")
    command.add_argument("--max-tokens", type=int, default=32, help="tokens to generate per request (default 32)")
    command.add_argument("--range-ratio", type=float, default=0.0,
                         help="draw max-tokens per request from [T(1-r), T(1+r)] (default 0)")
    command.add_argument("--endpoint", default="/v1/completions", help="/v1/completions (default) or "
                                                                       "/v1/chat/completions")
    command.add_argument("--model",
                         help="the requests' model field (default: the first of /v1/models, else left out)")
    command.add_argument("--prompt-words", type=int, default=32, help="words per prompt (default 32)")
    command.add_argument("--ignore-eos", action="store_true", help="generate exactly max-tokens tokens per request")
    command.add_argument("--backend", choices=["openai", "transformers"],
                         help="how --ignore-eos is said: openai (vLLM, trtllm-serve, llama.cpp; default) or "
                              "transformers (transformers serve; --local sets it)")
    command.add_argument("--waves", action="store_true",
                         help="static batching seen from the client: waves of --concurrency requests, each sent "
                              "when the previous wave has fully finished")
    command.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    command.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to connect (default 10)")
    command.add_argument("--time-limit", type=float, default=600.0,
                         help="seconds for the whole run; what is left then counts as errors (default 600)")
    command.add_argument("--extra-body", default="{}", help="JSON object merged into every request body")
    command.add_argument("--seed", type=int, default=0, help="prompts, lengths and arrivals (default 0)")
    command.add_argument("--json", action="store_true", help="print one JSON object: config, metrics, requests")
    local = command.add_argument_group("with --local")
    _add_server_arguments(local, model_flag="--serve-model")
    command.set_defaults(handler=_bench_command)


def _bench_command(args) -> int:
    import contextlib

    from llmlab.serving.bench import BenchConfig, check_config, format_bench, run_bench
    from llmlab.serving.local import local_server

    try:
        extra_body = json.loads(args.extra_body)
    except json.JSONDecodeError as error:
        raise ValueError(f"--extra-body must be a JSON object, e.g. '{{\"top_p\": 0.9}}' ({error.msg})") from None
    if not isinstance(extra_body, dict):
        raise ValueError("--extra-body must be a JSON object, e.g. '{\"top_p\": 0.9}'")
    config = BenchConfig(args.base_url or "http://127.0.0.1:1", requests=args.requests,
                         concurrency=args.concurrency, request_rate=args.request_rate, max_tokens=args.max_tokens,
                         range_ratio=args.range_ratio, endpoint=args.endpoint, model=args.model,
                         prompt_words=args.prompt_words, ignore_eos=args.ignore_eos,
                         backend=args.backend or "openai", waves=args.waves, request_timeout=args.request_timeout,
                         connect_timeout=args.connect_timeout, time_limit=args.time_limit, seed=args.seed,
                         extra_body=extra_body)
    check_config(config)  # refuse bad settings before starting a server
    try:
        with (local_server(_server_settings(args)) if args.local else contextlib.nullcontext()) as server:
            if server is not None:
                config.base_url, config.backend = server.base_url, args.backend or server.backend
                print(f"llmlab bench: serving {server.model} at {server.base_url}, ready in "
                      f"{server.ready_seconds:.1f} s", file=sys.stderr)
            result = run_bench(config)
    except (ModuleNotFoundError, RuntimeError, TimeoutError) as error:
        print(f"llmlab bench: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        data = result.to_dict()
        for request in data["requests"]:
            request.pop("text")
        print(json.dumps(data, indent=1))
    else:
        print(format_bench(result))
    return 1 if result.metrics["failed"] else 0


# --------------------------------------------------------------------------------------------------------------
# llmlab paged-sim
# --------------------------------------------------------------------------------------------------------------


def _add_paged_sim(subcommands) -> None:
    from llmlab.serving.paged import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_NUM_SEQS, DISTRIBUTIONS, RESERVATIONS

    command = subcommands.add_parser(
        "paged-sim", help="KV-cache waste: paged blocks vs contiguous reservation, simulated",
        description="Serve a trace of requests from one KV pool twice, with PagedAttention blocks and with one "
                    "contiguous reservation per request; print the waste of each (reserved, internal, external), "
                    "the concurrency and the preemptions.")
    command.add_argument("--requests", type=int, default=1000, help="synthetic requests (default 1000)")
    command.add_argument("--distribution", choices=list(DISTRIBUTIONS), default="sharegpt",
                         help="length distribution of the synthetic requests (default sharegpt)")
    command.add_argument("--lengths", metavar="FILE",
                         help="your own lengths instead: JSON [[prompt, output], ...] or CSV lines prompt,output")
    command.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                         help=f"tokens per KV block (default {DEFAULT_BLOCK_SIZE}, vLLM's)")
    command.add_argument("--max-model-len", type=int, default=4096,
                         help="longest request; a contiguous engine reserves this much per request (default 4096)")
    command.add_argument("--reservation", choices=list(RESERVATIONS), default="max",
                         help="contiguous reservation: max_model_len, the next power of two, or the exact length")
    command.add_argument("--kv-tokens", type=int,
                         help="KV pool in tokens (default: from --model/--gpu, else 32 x max-model-len)")
    command.add_argument("--model", help="size the pool with vLLM's budget for this catalog model (with --gpu)")
    command.add_argument("--gpu", help="catalog GPU for --model")
    command.add_argument("--precision", default="bf16", help="weights for --model (default bf16)")
    command.add_argument("--kv-dtype", help="KV dtype for --model (default: the weights' 16-bit type)")
    command.add_argument("--max-num-seqs", type=int, default=DEFAULT_MAX_NUM_SEQS,
                         help=f"most requests running at once (default {DEFAULT_MAX_NUM_SEQS})")
    command.add_argument("--arrival-rate", type=float,
                         help="Poisson arrivals, requests per decode step (default: all at once)")
    command.add_argument("--seed", type=int, default=0, help="random seed of the synthetic lengths (default 0)")
    command.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    command.set_defaults(handler=_paged_sim_command)


def _paged_sim_command(args) -> int:
    from llmlab.serving.paged import compare, read_lengths, synthetic_trace, trace_from_lengths

    if args.lengths:
        trace = read_lengths(args.lengths)
        trace_from_lengths(trace.prompt, trace.output, max_model_len=args.max_model_len)  # refuse too-long requests
    else:
        trace = synthetic_trace(args.requests, args.distribution, args.max_model_len, args.seed, args.arrival_rate)
    if args.kv_tokens is not None:
        kv_tokens, pool = args.kv_tokens, f"{args.kv_tokens:,} tokens (--kv-tokens)"
    elif args.model or args.gpu:
        if not (args.model and args.gpu):
            raise ValueError("--model and --gpu go together: they size the KV pool with vLLM's budget")
        from llmlab.engines import vllm_budget

        budget = vllm_budget(args.model, args.gpu, args.precision, args.kv_dtype, max_model_len=args.max_model_len,
                             block_size=args.block_size)
        kv_tokens, pool = budget.kv_tokens, f"{budget.kv_tokens:,} tokens ({budget.log[0]}: {args.model} on {args.gpu})"
    else:
        kv_tokens, pool = 32 * args.max_model_len, f"{32 * args.max_model_len:,} tokens (32 x max-model-len)"
    result = compare(trace, kv_tokens, args.block_size, args.max_model_len, args.reservation, args.max_num_seqs)
    if args.json:
        print(json.dumps({**result.to_dict(), "kv_tokens": kv_tokens, "pool": pool}, indent=2))
        return 0
    rows = [("", "paged", "contiguous"),
            ("scheme", f"blocks of {args.block_size}", f"reserve {args.reservation}")]
    for label, key, fmt in (("waste", "waste_fraction", "{:.1%}"), ("  reserved", "reserved_fraction", "{:.1%}"),
                            ("  internal", "internal_fraction", "{:.1%}"),
                            ("  external", "external_fraction", "{:.1%}"),
                            ("max concurrency", "max_concurrency", "{}"),
                            ("mean concurrency", "mean_concurrency", "{:.1f}"),
                            ("preemptions", "preemptions", "{}"), ("decode steps", "steps", "{:,}"),
                            ("mean wait (steps)", "mean_wait_steps", "{:,.0f}"),
                            ("simulated in (s)", "seconds", "{:.2f}")):
        values = [fmt.format(getattr(side, key) if hasattr(side, key) else side.to_dict()[key])
                  for side in (result.paged, result.contiguous)]
        rows.append((label, *values))
    print(f"{trace.name}; max_model_len {args.max_model_len}; KV pool {pool}")
    print("\n".join(f"{a:<20}{b:>20}{c:>20}" for a, b, c in rows))
    return 0


# --------------------------------------------------------------------------------------------------------------
# llmlab serve-cmd
# --------------------------------------------------------------------------------------------------------------


def _add_serve_cmd(subcommands) -> None:
    from llmlab.engines import ENGINES
    from llmlab.memory import FORMATS, KV_DTYPES

    command = subcommands.add_parser(
        "serve-cmd", help="the vLLM or TensorRT-LLM command that serves a plan",
        description="Write the command(s) that serve MODEL with vLLM or TensorRT-LLM at one precision on a GPU, with "
                    "flags checked against the engines' sources; refuse what would not start (a format the GPU "
                    "lacks, a max-model-len whose KV cache does not fit, a tensor-parallel size that does not divide "
                    "the heads).")
    command.add_argument("model", metavar="MODEL", help="catalog name (llama-3.1-8b ...) or a config.json")
    command.add_argument("--engine", choices=list(ENGINES), default="vllm", help="serving engine (default vllm)")
    command.add_argument("--gpu", required=True, help="catalog GPU: h100, a100, l4, t4 ...")
    command.add_argument("--precision", choices=list(FORMATS), default="bf16", help="weight format (default bf16)")
    command.add_argument("--kv-dtype", choices=list(KV_DTYPES), help="KV cache dtype (default: the weights' 16-bit)")
    command.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (default 1)")
    command.add_argument("--max-model-len", type=int,
                         help="tokens per request (default: the model's max_position_embeddings)")
    command.add_argument("--gpu-memory-utilization", type=float,
                         help="vLLM: fraction of the card (default 0.9); TensorRT-LLM: fraction of the free memory "
                              "given to the KV cache (default 0.9)")
    command.add_argument("--checkpoint", help="what to load: hub id or path (default: the catalog's hub id, or a "
                                              "placeholder path for checkpoints that must be quantized first)")
    command.add_argument("--port", type=int, default=8000, help="server port (default 8000)")
    command.add_argument("--json", action="store_true", help="print one JSON object (argv, text, notes, budget)")
    command.set_defaults(handler=_serve_cmd_command)


def _serve_cmd_command(args) -> int:
    from llmlab.engines import serve_command

    result = serve_command(args.engine, args.model, args.gpu, args.precision, args.kv_dtype, args.tp,
                           args.max_model_len, args.gpu_memory_utilization, args.checkpoint, args.port)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.text())
        print("\n".join(f"# note: {note}" for note in result.notes))
    return 0



# --------------------------------------------------------------------------------------------------------------
# llmlab quantize-matrix
# --------------------------------------------------------------------------------------------------------------


def _add_quantize_matrix(subcommands) -> None:
    command = subcommands.add_parser(
        "quantize-matrix", help="every quantization method on one model: perplexity, size, seconds (chapter 08)",
        description="Quantize fresh copies of one model with each method (ours from scratch, bitsandbytes, "
                    "llm-compressor), on the same calibration and evaluation text, and print per method the "
                    "perplexity, the weight bytes of a checkpoint in that format, the quantization seconds and, with "
                    "--speed, decode tokens/s with the real low-precision kernel.")
    command.add_argument("--model", default="smollm2-135m",
                         help="the embedded model (default), a local folder, or a hub id when online")
    command.add_argument("--methods", help="comma-separated, e.g. fp16,rtn-w4g64,gptq-w4g64,llmc-gptq-w4g64 "
                                           "(default: the full matrix; see llmlab.quant.matrix)")
    command.add_argument("--calib-samples", type=int, help="calibration windows (default 32; 8 with LLMLAB_BUDGET=small)")
    command.add_argument("--seq-len", type=int, help="tokens per calibration window and perplexity window "
                                                      "(default 512; 256 with LLMLAB_BUDGET=small)")
    command.add_argument("--eval-tokens", type=int, help="evaluation tokens (default 16384; 4096 small)")
    command.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    command.add_argument("--speed", action="store_true", help="also time decoding with each format's real kernel")
    command.add_argument("--threads", type=int, help="torch CPU threads (on a busy 2-core machine 1 is fastest)")
    command.add_argument("--save", metavar="NAME", help="store the result as data/results/NAME.json with provenance")
    command.add_argument("--merge", action="store_true",
                         help="with --save: keep the stored rows of NAME that this run does not redo (same settings)")
    command.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    command.set_defaults(handler=_quantize_matrix_command)


def _quantize_matrix_command(args) -> int:
    from llmlab.paths import budget
    from llmlab.quant.matrix import DEFAULT_METHODS, format_matrix, merge, parse_method, run_matrix

    small = budget() == "small"
    methods = [m for m in (args.methods.split(",") if args.methods else DEFAULT_METHODS) if m.strip()]
    for method in methods:
        parse_method(method)  # a typo fails now, with the list of names
    if args.merge and not args.save:
        raise ValueError("--merge needs --save NAME (the stored matrix to merge into)")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"--device {args.device!r}: choose cpu or cuda")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU here; run on CPU (--device cpu) or see the stored H100 run "
                         "(data/results/quant-matrix-h100.json)")
    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(row):
        figures = (f"ppl {row.perplexity:.3f}, {row.quantize_seconds:.1f} s" if row.status == "ok"
                   else f"skipped: {row.reason}")
        print(f"  {row.method}: {figures}", file=sys.stderr, flush=True)

    result = run_matrix(methods, args.calib_samples or (8 if small else 32), args.seq_len or (256 if small else 512),
                        args.eval_tokens or (4096 if small else 16384), args.model, args.device, args.speed,
                        on_row=progress)
    if args.save:
        from llmlab.paths import results_dir
        from llmlab.results import load_result, save_result

        if args.merge and (results_dir() / f"{args.save}.json").is_file():
            result = merge(load_result(args.save), result)
        print(f"stored {save_result(args.save, result, command=' '.join(['llmlab', *sys.argv[1:]]))}",
              file=sys.stderr)
    print(json.dumps(result, indent=1) if args.json else format_matrix(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
