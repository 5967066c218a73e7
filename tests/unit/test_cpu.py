"""What the CPU's flags decide: the precision training runs at and the engine backend=auto picks, on this CPU and on
/proc/cpuinfo files of both kinds of CPU."""

from __future__ import annotations

import torch

from kowhisper.common import cpu
from kowhisper.common.cpu import cpu_has_native_bf16
from kowhisper.config import Config


def test_auto_backend_follows_the_measurement_on_both_kinds_of_cpu(tmp_path, monkeypatch):
    """backend=auto on a CPU is CTranslate2 int8 whether or not the CPU does bf16 natively: measured faster than
    transformers bf16 on an AMX machine as well as faster than fp32 on an AVX2-only one (bench/RESULTS.md)."""
    from kowhisper.families.base import ModelSource
    from kowhisper.families.whisper.engines import choose_engine

    source = ModelSource("base", tmp_path, "base")
    for flags, native in (("fpu sse avx avx2 fma", False), ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", True)):
        cpuinfo = tmp_path / f"cpuinfo-{native}"
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
        monkeypatch.setattr(cpu, "CPUINFO_PATH", cpuinfo)
        assert cpu.cpu_has_native_bf16() is native
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert choose_engine("auto", source) == "ct2"
        assert choose_engine("hf", source) == "hf"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert choose_engine("auto", source) == "hf", "on CUDA transformers runs in fp16"


def test_this_cpu_gets_fp32_or_native_bf16_and_int8_only_when_asked():
    from kowhisper.train.precision import choose_precision

    default = choose_precision(Config())
    assert (default.device, default.int8, default.fp16, default.bf16) == ("cpu", False, False, cpu_has_native_bf16())
    assert choose_precision(Config(int8=True)).int8  # this bitsandbytes has a CPU backend
    assert choose_precision(Config(bf16=False)).bf16 is False
