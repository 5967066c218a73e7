"""Helpers shared by the tests and the benchmarks: models whose right answer is known.

Zero-shot whisper-base cannot read espeak Korean and loops to its token cap. Comparisons such as "the merged
model and the CTranslate2 export give the same transcript" or "engine A is faster than engine B" mean more when
the model produces the real sentence and stops where it should, so tests and benchmarks train one that does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, WhisperForConditionalGeneration

from kowhisper.common.runtime import peft_checkpointing_alias_quiet
from kowhisper.families.whisper.encoder_window import EncoderWindow, allow_fitted_window
from kowhisper.families.whisper.features import SpeechBatchCollator
from kowhisper.families.whisper.loading import load_processor

# Decoder-only LoRA: the encoder output does not change, so it is computed once and each step is cheap.
RECITING_TARGETS = r"model\.decoder\.layers\.\d+\.(self_attn\.q_proj|self_attn\.v_proj|fc1|fc2)"


def train_reciting_adapter(model_dir: Path, rows: list[dict], out_dir: Path, steps: int = 10, window=None) -> Path:
    """A LoRA adapter trained until the model recites `rows` (input_features and labels as a prepared split
    stores them), saved with the processor and its encoder window as train_offline.py saves <run>/adapter.
    With a fitted `window` the encoder sees each clip padded as train_offline.py would pad it alone."""
    window = window or EncoderWindow()
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    if window.is_fit:
        allow_fitted_window(model)
    # One clip per batch for a fitted window: inference pads a lone clip only to itself plus the tail.
    batches = [SpeechBatchCollator(window)(rows[i : i + 1]) for i in range(len(rows))] if window.is_fit else [SpeechBatchCollator()(rows)]
    with torch.no_grad():
        encoded = [model.model.encoder(batch["input_features"]).last_hidden_state for batch in batches]
    with peft_checkpointing_alias_quiet():
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=RECITING_TARGETS))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        losses = [model(encoder_outputs=(states,), labels=batch["labels"]).loss for states, batch in zip(encoded, batches)]
        loss = torch.stack(losses).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if loss.item() > 0.05:
        raise RuntimeError(f"the adapter did not learn to recite the clips (loss {loss.item():.3f} after {steps} steps)")
    model.save_pretrained(out_dir)
    load_processor(model_dir).save_pretrained(out_dir)
    window.save(out_dir)
    return out_dir


# Random wav2vec2 sizes. "tiny" trains in seconds on a CPU and keeps wav2vec2's real 20 ms frames and 400-sample
# receptive field; "base" is wav2vec2-base's shape (hidden 768, 12 layers, about 95M parameters), for speed only.
WAV2VEC2_SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, conv_dim=(32,) * 7,
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
# "learnable": tiny's conv stack with a wider transformer (hidden 128), and every dropout and LayerDrop off, for the
# test that shows a random model learning to read a few clips: dropout only slows memorising a handful of clips. In a
# plain loop on four clips, hidden 64 was still spelling every clip alike at step 300 where hidden 128 told them apart
# by step 460; under train_offline.py the hidden-128 model reads most of them by step 200.
WAV2VEC2_SIZES["learnable"] = dict(WAV2VEC2_SIZES["tiny"], hidden_size=128, intermediate_size=256, hidden_dropout=0.0,
                                   attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0)


def random_wav2vec2(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A randomly initialised Wav2Vec2ForCTC with a placeholder 32-token head and no vocabulary, saved as safetensors
    with its feature extractor: what a pretraining checkpoint such as XLS-R looks like to the online setup."""
    config = Wav2Vec2Config(vocab_size=32, feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0,
                            **WAV2VEC2_SIZES[size])
    torch.manual_seed(seed)
    Wav2Vec2ForCTC(config).save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out_dir)
    return Path(out_dir)
