"""The GPU catalog (datasheet figures as data), name lookup, native formats, and the local device helpers."""

import pytest
import torch

from llmlab.hardware import (DRIVER_RESERVE_FRACTION, GiB, detect, gpu, gpu_names, match_device, native_formats_for,
                             pick_device, supports)

REQUIRED = ["T4", "L4", "A10G", "RTX 3060 12GB", "RTX 4060 Ti 16GB", "RTX 3090", "RTX 4090", "RTX A6000", "A100 40GB",
            "A100 80GB", "L40S", "H100 PCIe", "H100 SXM", "H200"]


def test_catalog_holds_the_cards_the_course_names():
    missing = set(REQUIRED) - set(gpu_names())
    assert not missing, missing


@pytest.mark.parametrize("name", REQUIRED)
def test_every_entry_is_consistent(name):
    card = gpu(name)
    # native formats follow from the compute capability (fp8 >= 8.9, bf16/tf32 >= 8.0, int8 >= 7.5, no int4 on Hopper)
    assert set(card.native_formats) == set(native_formats_for(card.compute_capability)), card.native_formats
    # a TFLOPS figure only for formats the hardware runs natively, and always fp32 and fp16
    assert set(card.tflops) <= set(card.native_formats), (set(card.tflops), card.native_formats)
    assert {"fp32", "fp16"} <= set(card.tflops), card.tflops
    # dense tensor-core fp16 beats the CUDA cores' fp32 (T4: 65 vs 8.1; GeForce: 2x)
    assert card.tflops["fp16"] >= 2 * card.tflops["fp32"] * 0.99, card.tflops
    assert card.memory_bytes == card.memory_gb * GiB, card.memory_bytes
    assert card.source and card.bandwidth_gb_s > 0 and card.architecture


def test_datasheet_figures():
    h100 = gpu("H100 SXM")
    assert (h100.tflops["bf16"], h100.tflops["fp8"], h100.bandwidth_gb_s) == (989.4, 1978.9, 3350)  # dense, no sparsity
    assert h100.compute_capability == (9, 0) and h100.architecture == "Hopper"
    assert gpu("A100 80GB").tflops["fp16"] == 312 and gpu("A100 80GB").bandwidth_gb_s == 2039
    assert gpu("T4").tflops == {"fp32": 8.1, "fp16": 65, "int8": 130, "int4": 260}
    assert gpu("H200").memory_gb == 141 and gpu("H200").bandwidth_gb_s == 4800
    # derived GeForce rates reproduce the whitepaper's RTX 3090/4090 figures (71 / 165.2 TFLOPS fp16, fp32 accumulate)
    assert abs(gpu("RTX 3090").tflops["fp16"] - 71) < 0.5 and gpu("RTX 4090").tflops["fp8"] == 330.3


@pytest.mark.parametrize("alias, name", [
    ("h100", "H100 SXM"), ("H100", "H100 SXM"), ("h100-sxm", "H100 SXM"), ("a100", "A100 80GB"),
    ("A100-40GB", "A100 40GB"), ("rtx-3060", "RTX 3060 12GB"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("4060 ti", "RTX 4060 Ti 16GB"), ("a6000", "RTX A6000"), ("Tesla T4", "T4"), ("l40s", "L40S"), ("h200", "H200"),
    ("h100 pcie", "H100 PCIe"),
])
def test_lookup_is_case_insensitive_with_aliases(alias, name):
    assert gpu(alias).name == name


def test_unknown_gpu_names_the_closest():
    with pytest.raises(LookupError, match="unknown GPU 'h10'; closest: .*H100"):
        gpu("h10")
    with pytest.raises(LookupError, match="RTX 4090"):
        gpu("rtx 4080")


@pytest.mark.parametrize("name, precision, expected", [
    ("T4", "fp8", False), ("T4", "bf16", False), ("T4", "int8", True), ("T4", "fp16", True), ("T4", "int4", True),
    ("A100 80GB", "fp8", False), ("A100 80GB", "bf16", True), ("L4", "fp8", True), ("RTX 4090", "fp8", True),
    ("H100 SXM", "fp8", True), ("H100 SXM", "int8", True), ("H100 SXM", "int4", False), ("RTX 3090", "tf32", True),
])
def test_supports(name, precision, expected):
    assert supports(name, precision) is expected


def test_supports_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="unknown precision 'fp4'; choose one of"):
        supports("h100", "fp4")
    with pytest.raises(ValueError, match="nf4 is a weight-only storage format.*ask about 'fp16'"):
        supports("t4", "nf4")


def test_usable_memory_measured_or_estimated():
    h100 = gpu("h100")
    assert h100.memory_measured and h100.usable_memory_bytes == 85_017_493_504  # measured on the lent H100, 79.18 GiB
    assert abs(DRIVER_RESERVE_FRACTION - 0.0103) < 0.0001, DRIVER_RESERVE_FRACTION  # 81079 of 81920 MiB
    t4 = gpu("t4")
    assert not t4.memory_measured
    # 16 GiB less ECC (1/16: nvidia-smi shows 15360 MiB) less the driver's 1 %: 14.85 GiB
    assert 14.7 < t4.usable_memory_bytes / GiB < 14.9, t4.usable_memory_bytes / GiB
    assert gpu("RTX 4090").usable_memory_bytes / GiB == pytest.approx(24 * (1 - DRIVER_RESERVE_FRACTION))


def test_match_device_names_from_torch():
    assert match_device("NVIDIA H100 80GB HBM3", 85_017_493_504).name == "H100 SXM"
    assert match_device("Tesla T4").name == "T4"
    assert match_device("NVIDIA A100-SXM4-40GB", 40 * GiB).name == "A100 40GB"
    assert match_device("NVIDIA L40S-48C", 45 * GiB).name == "L40S"  # a vGPU profile: the longest catalog name inside
    assert match_device("NVIDIA GeForce RTX 4060 Ti", 8 * GiB) is None  # the 8 GB card is not the catalog's 16 GB
    assert match_device("NVIDIA B200", 180 * GiB) is None


def test_detect_describes_this_machine():
    info = detect()
    if torch.cuda.is_available():
        assert info.kind == "cuda" and info.compute_capability is not None
    else:
        assert info.kind == "cpu" and info.catalog is None and info.device_count == 0
    assert info.total_memory_bytes > 0 and info.torch_version == torch.__version__
    assert info.describe().startswith(info.kind)


def test_pick_device_prints_one_line_with_its_reason(capsys, monkeypatch):
    monkeypatch.delenv("LLMLAB_DEVICE", raising=False)
    device = pick_device()
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("device: "), printed
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        assert "sees no CUDA GPU" in printed[0], printed


def test_pick_device_obeys_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("LLMLAB_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    assert "LLMLAB_DEVICE=cpu" in capsys.readouterr().out
    monkeypatch.setenv("LLMLAB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="LLMLAB_DEVICE=tpu .* choose 'cuda' or 'cpu'"):
        pick_device()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_detect_matches_the_catalog_on_a_gpu():
    info = detect()
    assert info.catalog is not None, info.name  # the lent H100 reads "NVIDIA H100 80GB HBM3" -> H100 SXM
    assert info.compute_capability == info.catalog.compute_capability
    if info.catalog.memory_measured:
        assert info.total_memory_bytes == info.catalog.total_memory_bytes, info.total_memory_bytes
    assert 0 < info.free_memory_bytes <= info.total_memory_bytes
