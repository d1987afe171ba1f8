"""Quantization, from scratch and readable: each method is a short pure tensor function in the paper's symbols,
plus a driver that walks the model (`driver`), with architecture knowledge as data (`mappings`).

- `formats`: quantize/dequantize primitives (INT-k symmetric/asymmetric, per tensor/channel/group; FP8; NF4)
- `rtn`: round-to-nearest, the naive baseline
- `gptq`: GPTQ (arXiv 2210.17323), Hessian-based error compensation, column by column
- `awq`: AWQ (arXiv 2306.00978), activation-aware per-channel scales and clipping
- `smoothquant`: SmoothQuant (arXiv 2211.10438), migrating activation outliers into the weights
- `w8a8`: W8A8 fake-quant linears, INT8 or FP8, activations per token or per tensor
"""
