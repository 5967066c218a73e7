"""Device and precision, decided once for a training run, in `choose_precision`:

  CUDA  -> base in INT8 through bitsandbytes where the family uses LoRA, bf16 or fp16 mixed precision.
  CPU   -> base in fp32; bf16 autocast only where the CPU does bf16 in hardware (AMX / AVX512-BF16), because
           emulated bf16 is slower than fp32. INT8 only when int8=true is asked for: on a CPU bitsandbytes'
           INT8 layers are a little slower than fp32, not faster (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kowhisper.common.cpu import cpu_has_native_bf16
from kowhisper.config import TrainGroup
from kowhisper.train.arguments import TrainingSetupError, world_size


@dataclass(frozen=True)
class Precision:
    device: str  # "cuda" or "cpu"
    int8: bool
    fp16: bool
    bf16: bool
    reason: str
    lora: bool = True

    @property
    def summary(self) -> str:
        if not self.lora:
            base = "fp32 weights, full fine-tuning"
        else:
            base = "INT8 base (bitsandbytes) + LoRA" if self.int8 else "fp32 base + LoRA"
        mixed = "bf16 autocast" if self.bf16 else "fp16 mixed precision" if self.fp16 else "fp32 compute"
        return f"{self.device.upper()}, {base}, {mixed}"

    def notice(self) -> str:
        return f"Precision: {self.summary} ({self.reason})"


def choose_precision(config: TrainGroup, lora: bool = True) -> Precision:
    """`lora`: whether the family trains LoRA on a frozen base; only such a base may be INT8 (full fine-tuning
    updates every weight, and bitsandbytes' INT8 weights cannot be trained)."""
    if config.int8 and not lora:
        raise TrainingSetupError("int8=true quantizes a frozen base under LoRA, but this run trains every weight "
                                 "(finetune=full, or a CTC model's default); leave int8 unset, or set finetune=lora")

    if torch.cuda.is_available():
        if world_size() > torch.cuda.device_count():
            raise TrainingSetupError(
                f"{world_size()} processes were launched but only {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda_visible_devices={config.cuda_visible_devices}); list one GPU per process, "
                "e.g. cuda_visible_devices=0,1 for --nproc_per_node 2"
            )
        int8 = lora if config.int8 is None else config.int8
        if int8:
            check_int8_support("cuda")
        bf16 = torch.cuda.is_bf16_supported() if config.bf16 is None else config.bf16
        fp16 = (not bf16) if config.fp16 is None else config.fp16
        return Precision("cuda", int8, fp16, bf16, f"GPU {torch.cuda.get_device_name()}", lora)

    if config.fp16:
        raise TrainingSetupError(
            "fp16=true needs a CUDA GPU and none is visible; on CPU leave fp16 unset "
            "(bf16 autocast is used where the CPU does bf16 natively, fp32 elsewhere)"
        )
    native_bf16 = cpu_has_native_bf16()
    bf16 = native_bf16 if config.bf16 is None else config.bf16
    if config.int8:
        check_int8_support("cpu")
        reason = "int8=true asked for; on CPU it is a little slower than fp32"
    elif bf16 and not native_bf16:
        reason = "bf16=true asked for, but this CPU emulates bf16 (no AMX/AVX512-BF16): expect it slower than fp32"
    elif bf16:
        reason = "this CPU does bf16 natively (AMX/AVX512-BF16)"
    else:
        reason = "no native bf16 on this CPU (no AMX/AVX512-BF16), so fp32 is the fast choice"
    return Precision("cpu", bool(config.int8), False, bf16, reason, lora)


def check_int8_support(device: str) -> None:
    """Raise a clear error if bitsandbytes cannot run INT8 layers on `device`."""
    fallback = "set int8=false to train the LoRA on a full-precision base instead"
    try:
        # Here, not at the top: only int8=true needs bitsandbytes, and it may fail to load (this turns that into advice).
        import bitsandbytes
    except Exception as error:  # ImportError, or a RuntimeError from a native library that fails to load
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise TrainingSetupError(
            f"int8=true needs bitsandbytes, which does not load here ({type(error).__name__}: {first_line}). "
            f"Install it from the workspace wheelhouse, or {fallback}."
        ) from None
    supported = getattr(bitsandbytes, "supported_torch_devices", set())
    if device not in supported:
        raise TrainingSetupError(
            f"int8=true: the installed bitsandbytes {getattr(bitsandbytes, '__version__', '?')} has no {device} "
            f"backend (it supports: {', '.join(sorted(supported)) or 'none'}); {fallback}."
        )
