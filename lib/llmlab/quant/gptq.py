"""GPTQ: quantize a linear layer's weights column by column, pushing each column's rounding error onto the columns not
yet quantized, weighted by the inverse Hessian of the layer's reconstruction error.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", arXiv 2210.17323 (ICLR 2023). Mirrors the structure of IST-DASLab/gptq `gptq.py` (`fasterquant`).

For one layer with weights W [d_row, d_col] and calibration inputs X [d_col, N] the goal is argmin_Q ‖WX − QX‖²
(Eq. 1); its Hessian in each row of W is H = 2XXᵀ, shared by all rows. Algorithm 1 of the paper:

     1  Q ← 0                                              quantized output
     2  E ← 0 [d_row, B]                                   block quantization errors
     3  H⁻¹ ← Cholesky(H⁻¹)ᵀ                               Hessian inverse information (upper factor)
     4  for i = 0, B, 2B, …
     5      for j = i, …, i + B − 1
     6          Q[:, j] ← quant(W[:, j])                    quantize column
     7          E[:, j−i] ← (W[:, j] − Q[:, j]) / H⁻¹[j, j]  quantization error
     8          W[:, j:i+B] −= E[:, j−i] · H⁻¹[j, j:i+B]     update weights in block
     9      end
    10      W[:, i+B:] −= E · H⁻¹[i:i+B, i+B:]              lazy batch update
    11  end

Additions from the paper's §4 and the reference code: damping λ = percdamp · mean(diag H) added to the diagonal;
inputs that never fire (H[j, j] = 0) get weight 0; grids per group of `group_size` columns, chosen when quantization
reaches the group's first column (from the already-updated weights; a group that straddles two blocks also sees
columns still missing the block's line-10 update, as in the reference, so keep group_size dividing B); act-order:
columns in decreasing H[j, j], with the group grids fixed beforehand from the original weights in natural column
order, so groups stay contiguous in the stored layout ("static groups", IST-DASLab `--static-groups`, llm-compressor's
default `actorder="static"`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from llmlab.quant.formats import check_group_size, grid_params, mse, snap_to_grid
from llmlab.quant.rtn import rtn


class GPTQResult(NamedTuple):
    """What `gptq` returns."""

    Q: torch.Tensor  # [d_row, d_col] quantized weights as values on the grid (dequantized), float32, original order
    scale: torch.Tensor  # [d_row, n_groups] grid scale s per row and group (one group per row when group_size=None)
    zero: torch.Tensor  # [d_row, n_groups] zero point z (0 when symmetric): integer codes = round(Q / s) + z
    loss: float  # Σ_j ‖W[:, j] − Q[:, j]‖² / H⁻¹[j, j]² / 2, H⁻¹ from line 3: OBS's estimate of ‖WX − QX‖² / N


def hessian(X: torch.Tensor) -> torch.Tensor:
    """H = 2XXᵀ / N from layer inputs X [N tokens, d_col] (the reference divides by samples, not tokens: same H up to
    a scale, which GPTQ ignores)."""
    X = X.reshape(-1, X.shape[-1]).float()  # [..., d_col] -> [N, d_col]
    return 2 * X.T @ X / X.shape[0]  # [d_col, d_col]


def gptq(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None = None, blocksize: int = 128,
         percdamp: float = 0.01, act_order: bool = False, symmetric: bool = True,
         cuda_graphs: bool = True) -> GPTQResult:
    """Quantize W [d_row, d_col] to `bits` given H [d_col, d_col] (Algorithm 1); see the module docstring.

    On a GPU each block's column loop is replayed as one CUDA graph (`cuda_graphs`; same kernels, same result)."""
    W, H = W.float().clone(), H.float().clone()  # both are modified below
    d_row, d_col = W.shape
    check_group_size(d_col, group_size, bits)
    g = group_size or d_col  # columns per grid
    dead = H.diagonal() == 0  # inputs that were always 0: their weights never matter
    H[dead, dead] = 1
    W[:, dead] = 0
    scale = W.new_zeros(d_row, d_col // g)  # [d_row, n_groups], filled in natural column order
    zero = W.new_zeros(d_row, d_col // g)
    perm = torch.arange(d_col, device=W.device)
    if act_order:
        s, z = grid_params(W.view(d_row, d_col // g, g), bits, symmetric)  # [d_row, n_groups, g] -> [.., 1]
        scale, zero = s.squeeze(-1), z.squeeze(-1)  # static groups, fixed before any update
        perm = torch.argsort(H.diagonal(), descending=True)  # most active inputs first
        W, H = W[:, perm], H[perm][:, perm]  # columns and both Hessian axes in quantization order
    group_of = perm // g  # [d_col]: group (in natural order) of the column quantized j-th
    W = W.T.contiguous().T  # same [d_row, d_col] values stored column-major: each W[:, j] contiguous (2x faster on CPU)
    H.diagonal().add_(percdamp * H.diagonal().mean())  # H + λI, λ = percdamp · mean(diag H)
    try:
        L = torch.linalg.cholesky(H)
    except torch.linalg.LinAlgError as error:
        raise ValueError(f"the Hessian is not positive definite after damping percdamp={percdamp}; raise percdamp "
                         "(e.g. 0.1) or calibrate on more tokens") from error
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # line 3: upper factor of H⁻¹

    Q = torch.zeros_like(W)  # line 1 (column-major like W: each Q[:, j] contiguous)
    group_of = torch.as_tensor(group_of, device=W.device)  # [d_col]
    run_block = _graphed_block if cuda_graphs and W.is_cuda else _quantize_block
    loss = W.new_zeros(())
    for i in range(0, d_col, blocksize):  # line 4
        i_end = min(i + blocksize, d_col)
        E = W.new_zeros(i_end - i, d_row).T  # line 2: errors of this block, [d_row, B], column-major like W
        # each column's grid [d_row, B]: act-order's static grids, or (natural order) the grid of the group the block
        # starts in, replaced inside the block from each group start on
        S, Z = (grid[:, group_of[i:i_end]].T.contiguous().T for grid in (scale, zero))  # column-major too
        ahead = W[:, i : min(i_end + g - 1, d_col)]  # the block and the columns a group starting in it may reach
        run_block(ahead, Q[:, i:i_end], E, Hinv[i:i_end, i:i_end], S, Z, first=i % g, g=g, bits=bits,
                  symmetric=symmetric, fixed_grids=act_order)  # lines 5-9
        if not act_order:  # keep the grids of the groups that start in this block
            starts = list(range(-i % g, i_end - i, g))  # block columns that start a group
            groups = [(i + start) // g for start in starts]
            scale[:, groups], zero[:, groups] = S[:, starts], Z[:, starts]
        loss += E.pow(2).sum() / 2
        W[:, i_end:] -= E @ Hinv[i:i_end, i_end:]  # line 10: [d_row, B] @ [B, d_col-i_end]
    Q = Q[:, torch.argsort(perm)] if act_order else Q  # columns back in natural order
    return GPTQResult(Q.contiguous(), scale, zero, loss.item())


def _quantize_block(W: torch.Tensor, Q: torch.Tensor, E: torch.Tensor, Hinv: torch.Tensor, S: torch.Tensor,
                    Z: torch.Tensor, first: int, g: int, bits: int, symmetric: bool, fixed_grids: bool) -> None:
    """Lines 5-9 of Algorithm 1 on one block of B columns, in place.

    W [d_row, ≥ B]: the block's weights, then the later columns a group starting in the block reaches (read only, for
    its grid); Q, E [d_row, B]: quantized columns and scaled errors (out); Hinv [B, B]: the block's part of the
    upper factor; S, Z [d_row, B]: each column's grid, fixed (act-order) or rewritten here from each group start on,
    from the weights as updated so far; `first`: the block's first column's position in its group (i mod g)."""
    B = Q.shape[1]
    for j in range(B):  # line 5
        if not fixed_grids and (first + j) % g == 0:  # first column of a group
            s, z = grid_params(W[:, j : j + g], bits, symmetric)  # [d_row, g] -> [d_row, 1]
            S[:, j : j + g], Z[:, j : j + g] = s, z  # the group's columns inside this block
        snap_to_grid(W[:, j], S[:, j], Z[:, j], bits, symmetric, out=Q[:, j])  # line 6, in place: [d_row]
        torch.sub(W[:, j], Q[:, j], out=E[:, j]).div_(Hinv[j, j])  # line 7
        # line 8: W[:, j:B] −= outer(E[:, j], H⁻¹[j, j:B]), applied to the transpose [B-j, d_row], which is
        # contiguous in W's column-major layout: one in-place BLAS rank-1 update
        W[:, j:B].T.addr_(Hinv[j, j:B], E[:, j], alpha=-1)


_GRAPHS: dict = {}  # (shapes, strides, settings) -> (CUDA graph, its static input/output buffers)


def _graphed_block(*tensors: torch.Tensor, **settings) -> None:
    """`_quantize_block` replayed from a CUDA graph captured once per block shape and settings.

    On a GPU the column loop is launch-bound: ~7 kernels of a few microseconds each per column, ~100 k columns in
    a 135 M model. A graph records a block's 7·B launches once and replays them as one; the tensors are copied into
    the graph's own buffers and back (a few kernels per block)."""
    key = (tuple((t.shape, t.stride()) for t in tensors), tuple(sorted(settings.items())), tensors[0].device)
    if key not in _GRAPHS:
        buffers = [t.clone() for t in tensors]  # clone keeps the strides (column-major W, Q, E)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture, as torch.cuda.graph asks
            _quantize_block(*[b.clone() for b in buffers], **settings)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _quantize_block(*buffers, **settings)
        _GRAPHS[key] = graph, buffers
    graph, buffers = _GRAPHS[key]
    for buffer, t in zip(buffers, tensors):
        buffer.copy_(t)
    graph.replay()
    for buffer, t in zip(buffers, tensors):
        t.copy_(buffer)


# ---------------------------------------------------------------- measuring one layer (chapter 07)


def output_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """‖WX − ŴX‖² / N, the layer-output error GPTQ minimizes (Eq. 1) per calibration token, from H = 2XXᵀ/N alone:
    Σ_rows ΔW H ΔWᵀ / 2 with ΔW = W − Ŵ [d_row, d_col] (no need to keep the inputs X)."""
    D = W.float() - W_hat.float()  # [d_row, d_col]
    return ((D @ H.float()) * D).sum().item() / 2  # Σ_i D[i] H D[i]ᵀ / 2


class LayerComparison(NamedTuple):
    """RTN and GPTQ on one layer, same grid: what each does to the weights and to the layer's output."""

    bits: int  # integer bits per weight
    group_size: int | None  # columns per grid (None: one grid per output row)
    act_order: bool  # GPTQ quantized columns in decreasing H[j, j]
    rtn_weight_mse: float  # mean (W − Ŵ)² of round-to-nearest
    gptq_weight_mse: float  # mean (W − Ŵ)² of GPTQ: larger than RTN's, its weights moved to compensate
    rtn_output_error: float  # ‖WX − ŴX‖² / N of RTN
    gptq_output_error: float  # ‖WX − ŴX‖² / N of GPTQ: what it minimizes


def compare_with_rtn(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None = None,
                     act_order: bool = False, percdamp: float = 0.01) -> LayerComparison:
    """Quantize W [d_row, d_col] with RTN and with GPTQ (Hessian H [d_col, d_col]) on the same grid and compare."""
    W_rtn = rtn(W, bits, group_size)
    W_gptq = gptq(W, H, bits, group_size, percdamp=percdamp, act_order=act_order).Q
    return LayerComparison(bits, group_size, act_order, mse(W, W_rtn), mse(W, W_gptq),
                           output_error(W, W_rtn, H), output_error(W, W_gptq, H))
