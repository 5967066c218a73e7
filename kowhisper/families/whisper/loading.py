"""Loading a Whisper model folder: its processor, its weights in transformers (a LoRA adapter merged in), and the
encoder window it was trained with.

Below both the decoding engines (kowhisper.families.whisper.engines) and the CTranslate2 export (kowhisper.families.whisper.ct2_export),
which the engines call to make an export on first use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from kowhisper.common.runtime import peft_checkpointing_alias_quiet
from kowhisper.families.base import ModelError, ModelSource, pick_device
from kowhisper.families.whisper.encoder_window import EncoderWindow


def load_processor(path: Path):
    return WhisperProcessor.from_pretrained(str(path))


def load_hf_model(source: ModelSource, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """(model, processor) in eval mode; an adapter is merged into a float copy of its base.

    safetensors only, and the model class is named explicitly, so no checkpoint can run code on load.
    """
    if source.kind == "ct2":
        raise ModelError(f"{source.path} is a CTranslate2 export; transformers cannot load it")
    device = device or pick_device()
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    weights_dir = source.weights_dir
    model = WhisperForConditionalGeneration.from_pretrained(str(weights_dir), dtype=torch.float32, use_safetensors=True)
    if source.kind == "adapter":
        # Here, not at the top: peft takes about 2 s to import, and only an adapter needs it.
        from peft import PeftModel

        # Merged in float32 whatever the serving dtype: merging into a quantized or half base loses the update.
        with peft_checkpointing_alias_quiet():
            model = PeftModel.from_pretrained(model, str(source.path)).merge_and_unload()
    model = model.to(device=device, dtype=dtype).eval()
    return model, load_processor(weights_dir)


def trained_window(source: ModelSource) -> EncoderWindow:
    """The encoder window `source` was trained with; a base model always runs at Whisper's full 30 s."""
    return EncoderWindow() if source.kind == "base" else EncoderWindow.of_model(source.path)
