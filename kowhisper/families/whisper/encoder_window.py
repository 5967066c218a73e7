"""How much audio Whisper's encoder sees: its own 30 s window, or a window fitted to the batch.

Whisper pads every input to 30 s: 3000 log-mel frames, 1500 encoder positions. A 5 s clip therefore spends
five sixths of the encoder's work, forward and backward, on padding. `fit` pads a batch only to its longest
clip plus a tail of silence, rounded up to a multiple of `round_frames` so few distinct shapes occur, and runs
the encoder with its positional embeddings sliced to that length (as k2-fsa/icefall's Whisper recipe does).

Cut without fine-tuning, this breaks Whisper: it never learned to end a transcript before the 30 s mark, so it
loops (futo-org/whisper-acft). A model fine-tuned at `fit` learns it; a base model always runs at `full`.
The tail keeps some silence after the speech, which is where Whisper looks for the end of an utterance.

A run records its window next to its adapter (`encoder_window.json`), so evaluation, inference, merging and
the CTranslate2 export use the window the model was trained with, without being told.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from kowhisper.common.files import atomic_write_json
from kowhisper.families.whisper.frames import N_FRAMES
from kowhisper.families.whisper.options import WhisperOptions

FULL, FIT = "full", "fit"
WINDOW_MODES = (FULL, FIT)
WINDOW_FILE = "encoder_window.json"
# The encoder's second convolution has stride 2, so two mel frames make one encoder position.
FRAMES_PER_POSITION = 2


@dataclass(frozen=True)
class EncoderWindow:
    mode: str = FULL
    tail_frames: int = 0
    round_frames: int = 100

    def __post_init__(self):
        if self.mode not in WINDOW_MODES:
            raise ValueError(f"encoder_window={self.mode!r} is not one of {', '.join(WINDOW_MODES)}")
        if self.tail_frames < 0 or self.round_frames < FRAMES_PER_POSITION or self.round_frames % FRAMES_PER_POSITION:
            raise ValueError(
                f"encoder window tail_frames={self.tail_frames} must be >= 0 and round_frames={self.round_frames} "
                f"a positive multiple of {FRAMES_PER_POSITION}"
            )

    @classmethod
    def from_config(cls, config: WhisperOptions) -> EncoderWindow:
        return cls(config.encoder_window, config.encoder_window_tail_frames, config.encoder_window_round_frames)

    @property
    def is_fit(self) -> bool:
        return self.mode == FIT

    def frames_for(self, longest_frames: int) -> int:
        """The number of mel frames a batch whose longest clip has `longest_frames` is padded to."""
        if not self.is_fit:
            return N_FRAMES
        wanted = longest_frames + self.tail_frames
        return min(N_FRAMES, math.ceil(wanted / self.round_frames) * self.round_frames)

    def describe(self) -> str:
        if not self.is_fit:
            return "full (Whisper's 30 s)"
        return f"fit (longest clip + {self.tail_frames} frames of tail, rounded up to {self.round_frames} frames)"

    def save(self, folder: Path) -> Path:
        path = Path(folder) / WINDOW_FILE
        atomic_write_json(path, asdict(self))
        return path

    @classmethod
    def of_model(cls, folder: Path) -> EncoderWindow:
        """The window a model folder was trained with: its own file, else its run's (a checkpoint-N folder
        sits inside the run), else Whisper's full window (a base model, or an adapter from before windows)."""
        folder = Path(folder)
        for candidate in (folder / WINDOW_FILE, folder.parent / WINDOW_FILE):
            if candidate.is_file():
                return cls(**json.loads(candidate.read_text(encoding="utf-8")))
        return cls()


# ---- a Whisper encoder that takes fewer than 3000 frames ------------------------------------------------------


@functools.cache
def _fit_window_encoder_class() -> type:
    class FitWindowWhisperEncoder(WhisperEncoder):
        """WhisperEncoder whose positional embeddings are sliced to the input's length."""

        def forward(self, input_features: torch.Tensor, attention_mask=None, **kwargs):
            frames = input_features.shape[-1]
            # At 3000 frames this is transformers' own forward, so the full window gives exactly its output.
            if frames == N_FRAMES:
                return super().forward(input_features, attention_mask, **kwargs)
            if frames > N_FRAMES or frames % FRAMES_PER_POSITION:
                raise ValueError(f"a fitted Whisper window takes an even number of mel frames up to {N_FRAMES}, got {frames}")
            inputs_embeds = nn.functional.gelu(self.conv1(input_features))
            inputs_embeds = nn.functional.gelu(self.conv2(inputs_embeds)).permute(0, 2, 1)
            positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
            hidden_states = inputs_embeds + self.embed_positions(positions)
            hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
            for encoder_layer in self.layers:
                # LayerDrop as transformers does it (its probability is 0 in every released Whisper).
                if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                    continue
                hidden_states = encoder_layer(hidden_states, None, **kwargs)
            return BaseModelOutput(last_hidden_state=self.layer_norm(hidden_states))

    return FitWindowWhisperEncoder


def whisper_encoder(model) -> nn.Module:
    """The WhisperEncoder inside a WhisperForConditionalGeneration, WhisperModel or a peft model of either."""
    for module in model.modules():
        if isinstance(module, WhisperEncoder):
            return module
    raise TypeError(f"{type(model).__name__} holds no Whisper encoder")


def allow_fitted_window(model):
    """Let this model instance's encoder take windows shorter than 30 s. Only this instance changes: its
    encoder becomes a subclass of its own class whose forward slices the positional embeddings, so weights,
    state-dict names, LoRA layers, quantized layers and gradient checkpointing are all untouched."""
    encoder = whisper_encoder(model)
    encoder.__class__ = _fit_window_encoder_class()
    return model
