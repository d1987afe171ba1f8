"""Tensor parallelism as Megatron-LM does it: each decoder matrix split over tp GPUs, two all-reduces per layer.

Shoeybi et al., "Megatron-LM" (arXiv 1909.08053), §3 and figure 3. For an MLP Z = f(X A) B:
  - A is split by columns (its output features), A = [A_1 ... A_tp]: GPU i computes Y_i = f(X A_i) on its own,
    since an elementwise f needs no other column. "Column-parallel": no communication.
  - B is split by rows (its input features) to match: GPU i computes Y_i B_i, a partial sum, and one all-reduce adds
    them, Z = sum_i Y_i B_i. "Row-parallel": Megatron's operator g.
Attention splits the same way by heads: q, k, v column-parallel (whole heads on each GPU), each GPU attends with its
own heads, o_proj row-parallel. So one all-reduce of [batch, tokens, d] per attention block and one per MLP block.
The embedding and lm_head split by vocabulary rows (§3: "parallelize the input embedding weight matrix along the
vocabulary dimension"): a GPU looks up the ids of its range, zeros the rest, and an all-reduce sums; the lm_head's
partial logits [.., V/tp] are all-gathered (as vLLM's ParallelLMHead does; Megatron fuses this into the loss).
Replicated on every GPU: the norms, the rotary tables, the residual stream.

KV heads follow vLLM's rule, which `llmlab.memory.plan(..., tp=...)` plans (`weight_share`, `kv_share`): with K >= tp
KV heads each GPU holds K/tp of them; with K < tp (tp a multiple of K) each GPU holds the one KV head its query heads
read, so every KV head is replicated on tp/K GPUs. `shard_model(..., vocab_parallel=False)` keeps the embedding and
lm_head whole on every GPU instead (simpler, 2 x V x d / tp more bytes per GPU; the planner does not model it).

Inference only: the backward all-reduce of a column-parallel layer's input (Megatron's f) is not implemented.
Every all-reduce goes through `all_reduce` below, so a benchmark can time them by wrapping that one name.
Reference: vLLM's vllm/model_executor/layers/linear.py and vocab_parallel_embedding.py (read, not copied).
`run_ranks` runs a function on N CPU processes joined by gloo: the whole split is checked without GPUs.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import time
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmlab.measure import PRECISIONS, WHOLE_BATCH, comparison_row, prefill_rows
from llmlab.memory import Runtime, _check_tensor_parallel, _divisors, plan
from llmlab.models import load_spec

# --------------------------------------------------------------------------------------------------------------
# Which matrix splits how, as data
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """How one decoder Linear is split under tensor parallelism."""

    style: str  # "column": output features split, no communication; "row": input features split, all-reduce after
    units: str | None  # column splits cut whole units: the config key that counts them (heads, KV heads, MLP width)


LLAMA_LAYOUT = {  # module path inside a decoder layer -> its split
    "self_attn.q_proj": Split("column", "num_attention_heads"),  # [H x hd, d] -> [H/tp x hd, d]
    "self_attn.k_proj": Split("column", "num_key_value_heads"),  # [K x hd, d] -> [max(1, K/tp) x hd, d]
    "self_attn.v_proj": Split("column", "num_key_value_heads"),
    "self_attn.o_proj": Split("row", None),  # [d, H x hd] -> [d, H/tp x hd]
    "mlp.gate_proj": Split("column", "intermediate_size"),  # [f, d] -> [f/tp, d]
    "mlp.up_proj": Split("column", "intermediate_size"),
    "mlp.down_proj": Split("row", None),  # [d, f] -> [d, f/tp]
}
LAYOUTS = {"llama": LLAMA_LAYOUT, "mistral": LLAMA_LAYOUT, "qwen2": LLAMA_LAYOUT, "qwen3": LLAMA_LAYOUT}


def units_of_rank(units: int, rank: int, world_size: int) -> range:
    """The units (heads, KV heads, MLP columns, vocabulary rows) `rank` holds: units/tp consecutive ones; with fewer
    units than ranks (KV heads, tp a multiple of K), the one unit that tp/units consecutive ranks share."""
    if units >= world_size:
        per_rank = units // world_size
        return range(rank * per_rank, (rank + 1) * per_rank)
    sharing = world_size // units  # ranks holding the same unit; their query heads all read it
    return range(rank // sharing, rank // sharing + 1)


def check_tensor_parallel(config, world_size: int, vocab_parallel: bool = True) -> dict[str, Split]:
    """The layout for this transformers config, after the planner's checks (heads, KV heads or their replication,
    MLP width) and, when vocab_parallel, the vocabulary's. Raises ValueError saying which tp values work."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size (tp) must be a positive integer, not {world_size!r}")
    if config.model_type not in LAYOUTS:
        raise ValueError(f"no tensor-parallel layout for model_type {config.model_type!r}; "
                         f"known: {', '.join(LAYOUTS)} (add one to llmlab.parallel.LAYOUTS)")
    spec = load_spec(config.to_dict(), name=config.name_or_path or config.model_type)
    _check_tensor_parallel(spec, world_size, None)  # the planner's own rule, so both refuse the same splits
    vocab = config.vocab_size
    if vocab_parallel and vocab % world_size:
        raise ValueError(f"tp={world_size} must divide the vocabulary of {vocab} rows to split the embedding; "
                         f"try tp in {_divisors(vocab)}, or vocab_parallel=False (embedding and lm_head replicated)")
    return LAYOUTS[config.model_type]


# --------------------------------------------------------------------------------------------------------------
# Communication: every collective of the split model goes through these two names
# --------------------------------------------------------------------------------------------------------------


def all_reduce(x: torch.Tensor, group=None, world_size: int = 1) -> torch.Tensor:
    """Sum `x` over the ranks, in place (a no-op for one rank)."""
    if world_size > 1:
        dist.all_reduce(x, group=group)
    return x


def all_gather_last(x: torch.Tensor, group=None, world_size: int = 1) -> torch.Tensor:
    """Concatenate every rank's `x` along the last dimension, in rank order: [.., n] -> [.., world_size x n]."""
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


# --------------------------------------------------------------------------------------------------------------
# The parallel layers
# --------------------------------------------------------------------------------------------------------------


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    """A parameter holding its own copy, so the full matrix it was cut from can be freed."""
    return nn.Parameter(tensor.clone(), requires_grad=False)


class ColumnParallelLinear(nn.Module):
    """Y_i = X A_i: this rank's output features (rows of nn.Linear's weight [out, in], which is A transposed).

    `units` counts the blocks the output is cut along (H heads of hd rows, K KV heads, or f single rows); a rank keeps
    whole units, `units_of_rank`. No communication: each rank's output is its own slice of Y.
    """

    def __init__(self, linear: nn.Linear, rank: int, world_size: int, units: int | None = None):
        super().__init__()
        units = units or linear.out_features
        rows_per_unit = linear.out_features // units  # head_dim for heads, 1 for MLP columns
        kept = units_of_rank(units, rank, world_size)
        rows = slice(kept.start * rows_per_unit, kept.stop * rows_per_unit)
        self.weight = _frozen(linear.weight[rows])  # [out, in] -> [out_i, in]
        self.bias = _frozen(linear.bias[rows]) if linear.bias is not None else None  # [out] -> [out_i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [.., in] -> [.., out_i]
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """Z = sum_i Y_i B_i: this rank's input features (columns of nn.Linear's weight [out, in]); one all-reduce adds
    the ranks' partial products, then the (replicated) bias is added once."""

    def __init__(self, linear: nn.Linear, rank: int, world_size: int, group=None):
        super().__init__()
        columns = units_of_rank(linear.in_features, rank, world_size)
        self.weight = _frozen(linear.weight[:, columns.start:columns.stop])  # [out, in] -> [out, in/tp]
        self.bias = _frozen(linear.bias) if linear.bias is not None else None  # [out], whole on every rank
        self.group, self.world_size = group, world_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [.., in/tp] -> [.., out]
        partial = F.linear(x, self.weight)  # Y_i B_i
        total = all_reduce(partial, self.group, self.world_size)  # sum over ranks
        return total if self.bias is None else total + self.bias


class VocabParallelEmbedding(nn.Module):
    """This rank's rows [start, stop) of the embedding [V, d]; ids outside them give zeros, and an all-reduce sums."""

    def __init__(self, embedding: nn.Embedding, rank: int, world_size: int, group=None):
        super().__init__()
        rows = units_of_rank(embedding.num_embeddings, rank, world_size)
        self.start, self.stop = rows.start, rows.stop
        self.weight = _frozen(embedding.weight[self.start:self.stop])  # [V, d] -> [V/tp, d]
        self.group, self.world_size = group, world_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [batch, tokens] -> [batch, tokens, d]
        outside = (ids < self.start) | (ids >= self.stop)  # [batch, tokens]
        local = torch.where(outside, 0, ids - self.start)  # other ranks' ids look up row 0, zeroed next
        x = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0)  # [batch, tokens, d]
        return all_reduce(x, self.group, self.world_size)


class VocabParallelLMHead(nn.Module):
    """This rank's vocabulary rows of lm_head [V, d] (the embedding's shard when the two are tied); the partial
    logits [.., V/tp] of all ranks are gathered into the full [.., V] on every rank."""

    def __init__(self, lm_head: nn.Linear, rank: int, world_size: int, group=None, tied: nn.Parameter | None = None):
        super().__init__()
        rows = units_of_rank(lm_head.out_features, rank, world_size)
        self.weight = tied if tied is not None else _frozen(lm_head.weight[rows.start:rows.stop])  # [V, d] -> [V/tp, d]
        self.group, self.world_size = group, world_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [.., d] -> [.., V]
        local = F.linear(x, self.weight)  # [.., V/tp]
        return all_gather_last(local, self.group, self.world_size)


def shard_model(model: nn.Module, rank: int, world_size: int, group=None, vocab_parallel: bool = True) -> nn.Module:
    """Split a transformers Llama-family CausalLM (full weights on every rank) in place, for `rank` of `world_size`.

    Decoder matrices as `LAYOUTS` says; each attention module then runs transformers' own attention on its local
    heads (H/tp query heads, max(1, K/tp) KV heads). vocab_parallel: embedding and lm_head split by vocabulary rows
    (the planner's layout, Megatron's and vLLM's); False keeps them whole on every rank. Norms stay replicated.
    Use a DynamicCache (the default) or a StaticCache: both take their head count from the K/V tensors.
    """
    config = model.config
    layout = check_tensor_parallel(config, world_size, vocab_parallel)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, not {rank}")
    heads = config.num_attention_heads // world_size
    kv_heads = len(units_of_rank(config.num_key_value_heads, rank, world_size))
    for layer in model.model.layers:
        for path, split in layout.items():
            owner_path, name = path.rsplit(".", 1)
            owner = layer.get_submodule(owner_path)
            linear = getattr(owner, name)
            if split.style == "column":
                sharded = ColumnParallelLinear(linear, rank, world_size, getattr(config, split.units))
            else:
                sharded = RowParallelLinear(linear, rank, world_size, group)
            setattr(owner, name, sharded)
        layer.self_attn.num_key_value_groups = heads // kv_heads  # query heads reading each local KV head
    if vocab_parallel:
        tied = model.lm_head.weight is model.model.embed_tokens.weight
        model.model.embed_tokens = VocabParallelEmbedding(model.model.embed_tokens, rank, world_size, group)
        model.lm_head = VocabParallelLMHead(model.lm_head, rank, world_size, group,
                                            tied=model.model.embed_tokens.weight if tied else None)
    return model


@torch.no_grad()
def greedy_decode(model: nn.Module, input_ids: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding with a KV cache: (tokens [batch, new_tokens], the logits each was chosen from
    [batch, new_tokens, V]). Identical on every rank of a split model, since the logits are gathered."""
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)  # prefill: [batch, 1, V]
    cache, logits = out.past_key_values, out.logits[:, -1]  # [batch, V]
    tokens, chosen_from = [], []
    for step in range(new_tokens):
        token = logits.argmax(-1, keepdim=True)  # [batch, 1]
        tokens.append(token)
        chosen_from.append(logits)
        if step + 1 < new_tokens:
            logits = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1]  # [batch, V]
    return torch.cat(tokens, dim=1), torch.stack(chosen_from, dim=1)


def compare_logits(reference_logits: torch.Tensor, split_logits: torch.Tensor, reference_tokens: torch.Tensor,
                   split_tokens: torch.Tensor) -> dict:
    """The split model against the unsplit one on the same weights and prompt.

    Logits [batch, tokens, V] of one forward pass: the largest |difference| and the same relative to the reference
    logits' standard deviation (the split only reorders sums, so in float32 this is ~1e-6; bf16 rounds each partial
    sum, ~1e-1). Greedy tokens [batch, new_tokens]: how many agree, and the first step where they differ (None when
    none does); after a first difference the two continue from different prefixes, so only that step is telling.
    """
    difference = (split_logits.float() - reference_logits.float()).abs().max().item()
    spread = reference_logits.float().std().item()
    agree = (split_tokens == reference_tokens).all(dim=0)  # [new_tokens]: every sequence of the batch agrees
    first_difference = None if bool(agree.all()) else int((~agree).nonzero()[0, 0])
    return {"max_abs_logit_difference": difference, "reference_logit_std": spread,
            "relative_difference": difference / spread if spread else (float("inf") if difference else 0.0),
            "greedy_tokens": int(split_tokens.numel()),
            "greedy_tokens_equal": int((split_tokens == reference_tokens).sum()),
            "first_different_token": first_difference}


def check_summary(check: dict | None) -> str:
    """One line for a stored correctness check (`compare_logits` plus dtype and prompt_tokens; runs stored before
    2026-11-26 lack the relative difference and the first differing step, which are derived where possible)."""
    if not check:
        return "not measured yet"
    relative = check.get("relative_difference", check["max_abs_logit_difference"] / check["reference_logit_std"])
    if "first_different_token" not in check:  # an old run: only the count is stored
        agreed = f"{check['greedy_tokens_equal']} of {check['greedy_tokens']} equal"
    elif check["first_different_token"] is None:
        agreed = f"all {check['greedy_tokens']} equal"
    else:
        agreed = f"first differ at step {check['first_different_token']}"
    layers = f", {check['num_hidden_layers']} decoder layer(s)" if "num_hidden_layers" in check else ""
    return (f"{check.get('dtype', 'bfloat16')}{layers}: max |logit difference| {check['max_abs_logit_difference']:.3g} "
            f"= {relative:.2g} x the logits' standard deviation; greedy tokens: {agreed}")


# --------------------------------------------------------------------------------------------------------------
# Several ranks on one CPU (gloo): the split checked without GPUs
# --------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on now (for the ranks' rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(function, rank: int, world_size: int, port: int, args: tuple, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # the ranks share the CPU's cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        buffer = io.BytesIO()
        torch.save(function(rank, world_size, *args), buffer)  # by value: the process may end before it is read
        results.put((rank, True, buffer.getvalue()))
    except BaseException:  # report any failure to the parent, which raises it
        results.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def run_ranks(function, world_size: int, *args, timeout_s: float = 300.0) -> list:
    """Run `function(rank, world_size, *args)` in `world_size` CPU processes joined by gloo; each rank's return value,
    in rank order. `function` must be importable (a module's top-level function, not one defined in a notebook)."""
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=_rank_main, args=(function, rank, world_size, port, args, results),
                                 daemon=True) for rank in range(world_size)]
    for process in processes:
        process.start()
    collected, deadline = {}, time.monotonic() + timeout_s
    try:
        while len(collected) < world_size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_size} ranks did not finish in {timeout_s:g} s; raise timeout_s or "
                                   "make the work smaller")
            try:
                rank, ok, value = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a rank died with exit code {dead[0]} before reporting") from None
                continue
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            collected[rank] = torch.load(io.BytesIO(value), weights_only=False)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    return [collected[rank] for rank in range(world_size)]


# --------------------------------------------------------------------------------------------------------------
# Stored measurements against the planner
# --------------------------------------------------------------------------------------------------------------

STORED_RUNS = ("gpu-tensor-parallel-h200", "gpu-tensor-parallel-h100")  # what the GPU benchmark stores, per GPU


def stored_run() -> dict:
    """The newest stored multi-GPU run of benchmarks/gpu_tensor_parallel.py (provenance and measurements)."""
    from llmlab.results import load_result

    runs = []
    for name in STORED_RUNS:
        try:
            runs.append(load_result(name))
        except LookupError:
            continue
    if not runs:
        raise LookupError(f"no stored tensor-parallel run ({', '.join(STORED_RUNS)}); run "
                          "benchmarks/gpu_tensor_parallel.py on 2 GPUs (see its docstring)")
    return max(runs, key=lambda run: run["provenance"]["date"])


def allreduce_seconds(message_bytes: int, tp: int, bus_bytes_per_s: float, latency_s: float = 0.0) -> float:
    """Time of one ring all-reduce of `message_bytes`: latency + 2 (tp - 1) / tp x S / bus bandwidth (each GPU sends
    and receives that much; nccl-tests' bus-bandwidth convention, so a measured busbw plugs in directly)."""
    if tp == 1:
        return 0.0
    return latency_s + 2 * (tp - 1) / tp * message_bytes / bus_bytes_per_s


def allreduces_per_decode_step(num_layers: int, vocab_parallel: bool = True) -> int:
    """All-reduces in one forward pass: one per attention and one per MLP block, plus the vocab-parallel embedding's
    (the lm_head's all-gather is not counted)."""
    return 2 * num_layers + (1 if vocab_parallel else 0)


def planned_model(model: str, overrides: dict | None = None) -> str | dict:
    """What to give `plan` for a catalog model built with some config fields changed (e.g. fewer layers)."""
    return {**load_spec(model).config, **overrides} if overrides else model


def compare_with_plan(measurements: dict, runtime: Runtime = WHOLE_BATCH) -> list[dict]:
    """Per rank, the planner's per-GPU bytes (`plan(..., tp=...)`) beside the stored measurements.

    One row per compared quantity: part, rank, layout, batch, context, planned_bytes, measured_bytes, error (planned /
    measured - 1; negative = the planner under-predicts). Per rank: "weights" (the parameters' bytes); "NCCL buffers"
    (Runtime.nccl_bytes vs what the first collective added outside PyTorch); "outside PyTorch" (CUDA context + NCCL
    vs the most seen outside the allocator after a prefill). Per prefill point, `llmlab.measure.prefill_rows`:
    "KV cache", "allocated peak" and "per-GPU total" (peak reserved + memory outside PyTorch: what nvidia-smi shows).
    `runtime` defaults to whole-batch prefills, as the benchmark runs them; its other constants are RUNTIME's.
    """
    model, tp = planned_model(measurements["model"], measurements.get("overrides")), measurements["tp"]
    precision = PRECISIONS[measurements["dtype"]]
    layout = "vocab-parallel" if measurements.get("vocab_parallel", True) else "replicated embedding and lm_head"
    first = plan(model, precision, precision, 1, 1, tp=tp, runtime=runtime)  # context-free parts
    communication = runtime.nccl_bytes if tp > 1 else 0
    rows = []
    for rank_data in measurements["ranks"]:
        labels = dict(rank=rank_data["rank"], layout=layout)
        rows += comparison_row("weights", first.per_gpu_weight_bytes, rank_data["weights_parameter_bytes"], **labels)
        if tp > 1:
            rows += comparison_row("NCCL buffers", runtime.nccl_bytes, rank_data.get("nccl_bytes"), **labels)
        points = [point for point in rank_data["points"] if not point.get("skipped")]
        outside = [point["non_pytorch_bytes"] for point in points if point.get("non_pytorch_bytes") is not None]
        planned_outside = runtime.cuda_context_bytes + communication
        rows += comparison_row("outside PyTorch", planned_outside, max(outside, default=None), **labels)
        for point in points:
            planned = plan(model, precision, precision, point["context"], point["batch"], tp=tp, runtime=runtime)
            rows += prefill_rows(planned, point, point.get("non_pytorch_bytes"), runtime, **labels)
    return rows


def compare_communication(measurements: dict) -> list[dict]:
    """Per decode batch: the all-reduce time of one decode step, measured (CUDA events around each call, rank 0) and
    estimated from the stored bandwidth sweep, its share of the step it was timed in, and TP=1 vs TP=n step times
    (eager steps without the timing events: "speedup" = TP=1 step / TP=n step).

    Estimates: "bandwidth" = calls x allreduce_seconds(message, tp, best measured busbw); "latency + bandwidth" adds
    the measured time of the sweep's smallest message to each call; "standalone" = calls x the measured time of a
    lone all-reduce of the decode message [batch, d] in a loop.
    """
    tp = measurements["tp"]
    sweep = measurements["allreduce_sweep"]
    best_busbw = max(size["busbw_bytes_per_s"] for size in sweep)
    latency = min(sweep, key=lambda size: size["bytes"])["seconds"]
    tp1 = {point["batch"]: point for point in measurements["tp1"]["decode"]}
    rows = []
    for point in measurements["ranks"][0]["decode"]:
        batch, calls, message = point["batch"], point["allreduces_per_step"], point["message_bytes"]
        single = tp1.get(batch, {}).get("step_seconds")
        rows.append({
            "batch": batch, "message_bytes": message, "allreduces_per_step": calls,
            "step_seconds": point["step_seconds"], "tp1_step_seconds": single,
            "speedup": single / point["step_seconds"] if single else None,
            "allreduce_seconds_per_step": point["allreduce_seconds_per_step"],
            "allreduce_share": point["allreduce_seconds_per_step"] / point["timed_step_seconds"],
            "allreduce_seconds_per_token": point["allreduce_seconds_per_step"] / batch,
            "estimate_bandwidth_seconds": calls * allreduce_seconds(message, tp, best_busbw),
            "estimate_latency_bandwidth_seconds": calls * allreduce_seconds(message, tp, best_busbw, latency),
            "estimate_standalone_seconds": calls * point["standalone_allreduce_seconds"],
        })
    return rows



def compare_decode_speed(measurements: dict) -> list[dict]:
    """TP=1 against TP=n tokens/s per sequence of greedy generate() (the prefill excluded), per batch and mode ("eager";
    "static": static cache, compiled with CUDA graphs), from rank 0: tp1_tokens_per_s, tokens_per_s and speedup
    (None where one side did not run, e.g. a compile failure stored as "<mode>_error")."""
    tp1 = {row["batch"]: row for row in measurements["tp1"]["generate"]}
    rows = []
    for row in measurements["ranks"][0].get("generate", []):
        for key, value in row.items():
            if key.endswith("_tokens_per_s"):
                single = tp1.get(row["batch"], {}).get(key)
                rows.append({"batch": row["batch"], "mode": key.removesuffix("_tokens_per_s"),
                             "tp1_tokens_per_s": single, "tokens_per_s": value,
                             "speedup": value / single if single else None})
    return rows
