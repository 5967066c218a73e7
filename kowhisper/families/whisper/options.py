"""The config keys only the Whisper family reads, as one group of kowhisper.config's flat Config.

Part of the configuration, not of the family's model code: it imports nothing but the standard library and
kowhisper.common, so the configuration loads without torch. WhisperFamily.options names this group, and a key set
for another family's model is reported as ignored (kowhisper.families.registry.ignored_keys_notice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kowhisper.common.errors import ConfigError
from kowhisper.common.keys import KeyGroup, check_choice
from kowhisper.common.keys import help_field as _help

ENCODER_WINDOWS = ("fit", "full")


@dataclass
class WhisperOptions(KeyGroup):
    title: ClassVar[str] = "Whisper only"

    language: str = _help("Language name Whisper is told to transcribe.", "Korean")
    task: str = _help("Whisper task token: 'transcribe' or 'translate'.", "transcribe")
    max_label_tokens: int = _help("Drop rows whose labels exceed this many tokens; Whisper's decoder holds 448.", 448)
    freeze_encoder: bool = _help(
        "Train only the decoder: LoRA goes on the decoder's target_modules alone (with finetune=full, only the decoder's "
        "weights train) and the encoder stays as it is (as the Hugging Face seq2seq example's freeze_encoder). Faster per "
        "step; the encoder cannot adapt to new voices.",
        False,
    )

    # ---- encoder window (kowhisper/families/whisper/encoder_window.py) ------------------------------------------
    encoder_window: str = _help(
        "Audio the encoder sees per batch when training: 'fit' pads each batch only to its longest clip plus "
        "encoder_window_tail_frames (several times faster on short clips), 'full' to Whisper's own 30 s. The run "
        "records it, and evaluation, inference and exports use it; a base model always runs at 'full'.",
        "fit",
    )
    encoder_window_tail_frames: int = _help(
        "With encoder_window=fit: silence kept after the longest clip of a batch, in 10 ms mel frames. Whisper "
        "ends a transcript where it hears the speech end; a tail of silence lets it.",
        50,
    )
    encoder_window_round_frames: int = _help(
        "With encoder_window=fit: windows are rounded up to a multiple of this many frames, so few shapes occur.", 100
    )

    timestamped_label_share: float = _help(
        "Share of training clips whose label carries Whisper timestamps (<|start|> text <|end|>, the times read "
        "off the clip's audio) instead of <|notimestamps|>. Whisper was trained on such a mix; without it a "
        "fine-tuned model stops writing timestamps, and long audio and SRT come back as one block per 30 s.",
        0.5,
    )
    generation_max_length: int = _help("Maximum generated tokens when evaluating and transcribing.", 225)
    initial_prompt: str = _help(
        "Text given to Whisper before the first window of each recording (and before each clip evaluate_model.py scores): "
        "names, terms and the spelling you want, e.g. 'KT 고객센터 상담. 요금제, 데이터, 5G.'. It is never part of the "
        "transcript. Empty: none.", "")
    hotwords: list[str] = _help(
        "Words Whisper should prefer, given before every window (faster-whisper's hotwords): product names, people's names, "
        "terms in their own spelling. Empty: none. With initial_prompt, Whisper reads at most 223 prompt tokens; more is "
        "trimmed, with a message.", factory=list)

    # ---- CTranslate2 export (inference.py --export-ct2) -----------------------------------------------------------
    ct2_dir: str | None = _help("Where --export-ct2 writes the CTranslate2 model. Unset: <run>/ct2-<quantization>.", None)
    ct2_quantization: str = _help("CTranslate2 weight type: int8, int8_float16, float16 or float32.", "int8")

    # ---- whisper.cpp export (inference.py --export-ggml) -------------------------------------------------------------
    ggml_dir: str | None = _help(
        "Where --export-ggml writes the whisper.cpp files. Unset: <run>/ggml (the base: <workspace>/exports/base-ggml).", None)
    ggml_quantization: str = _help(
        "whisper.cpp weight type of the file written beside ggml-model-f16.bin: q8_0, q5_0, or f16 (that file only).", "q8_0")

    def __post_init__(self):
        super().__post_init__()
        check_choice("encoder_window", self.encoder_window, ENCODER_WINDOWS)
        # Written out, not imported from ggml_export: the configuration loads without torch.
        check_choice("ggml_quantization", self.ggml_quantization, ("f16", "q8_0", "q5_0"))
        if self.encoder_window_tail_frames < 0 or self.encoder_window_round_frames < 2 or self.encoder_window_round_frames % 2:
            raise ConfigError(
                f"encoder_window_tail_frames must be >= 0 (got {self.encoder_window_tail_frames}) and encoder_window_round_frames "
                f"an even number >= 2 (got {self.encoder_window_round_frames})"
            )
        if not 0 <= self.timestamped_label_share <= 1:
            raise ConfigError(f"timestamped_label_share is a share in [0, 1], got {self.timestamped_label_share}")
