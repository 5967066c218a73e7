"""The Whisper family's whisper.cpp export: the GGML file whisper.cpp, pywhispercpp and their apps load.

The file is written here in numpy, after whisper.cpp's own converters (models/convert-h5-to-ggml.py, convert-pt-to-ggml.py)
and its quantize tool (examples/quantize, ggml's reference quantizers), since neither ships in a package this project
can install:

    magic "ggml", 11 int32 hyperparameters (the last the weight type), the mel filter bank (n_mels x 201 float32),
    the byte strings of the text tokens (the special tokens whisper.cpp makes itself from n_vocab), then each tensor:
    n_dims, name length, type, its dimensions innermost first, its name, its data.

Tensors carry openai/whisper's names (encoder.blocks.N.attn.query.weight), not transformers'. whisper.cpp reads 1-D
tensors, the conv biases and the positional embeddings as float32, the conv kernels as float16, and every other matrix
in the file's weight type: float16, or ggml's q8_0 or q5_0 blocks. proj_out is not written: whisper.cpp reads its output
projection from the token embedding, as Whisper ties them.

One folder holds ggml-model-f16.bin and, unless quantization=f16, ggml-model-<quantization>.bin. whisper.cpp always
encodes full 30 s windows, so a model trained with fitted encoder windows is exported with a warning.
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

from kowhisper.common.files import atomic_write_json
from kowhisper.families.base import FINAL_FULL_DIR, ModelError, ModelSource
from kowhisper.families.export_folders import (
    EXPORT_MARKER,
    adapter_home,
    check_replaceable,
    replace_folder,
    source_fingerprint,
    staging_dir,
)
from kowhisper.families.whisper.loading import load_hf_model, trained_window

log = logging.getLogger("kowhisper")

GGML_QUANTIZATIONS = ("f16", "q8_0", "q5_0")
GGML_FILE_MAGIC = 0x67676D6C  # "ggml"
# ggml's tensor type ids (ggml.h, enum ggml_type) and the file-level weight type whisper.cpp reads from the header
# (enum ggml_ftype); a quantized file adds GGML_QNT_VERSION * 1000 to it, as whisper.cpp's quantize tool writes, so that
# a whisper.cpp whose block layout has changed since can tell.
GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0 = 0, 1, 6, 8
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000
_TENSOR_TYPES = {"f16": GGML_TYPE_F16, "q8_0": GGML_TYPE_Q8_0, "q5_0": GGML_TYPE_Q5_0}
_FILE_TYPES = {"f16": 1, "q8_0": 7 + GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR, "q5_0": 8 + GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR}
QUANT_BLOCK = 32  # weights per q8_0 / q5_0 block, each with its own float16 scale

# Kept float32 in every file: whisper.cpp allocates them so (positional embeddings, conv biases shaped [n, 1]).
_ALWAYS_F32 = {"encoder.positional_embedding", "decoder.positional_embedding", "encoder.conv1.bias", "encoder.conv2.bias"}
_TOP_LEVEL_NAMES = {
    "model.encoder.conv1.weight": "encoder.conv1.weight",
    "model.encoder.conv1.bias": "encoder.conv1.bias",
    "model.encoder.conv2.weight": "encoder.conv2.weight",
    "model.encoder.conv2.bias": "encoder.conv2.bias",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    "model.encoder.layer_norm.weight": "encoder.ln_post.weight",
    "model.encoder.layer_norm.bias": "encoder.ln_post.bias",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "model.decoder.layer_norm.weight": "decoder.ln.weight",
    "model.decoder.layer_norm.bias": "decoder.ln.bias",
}
_LAYER_PARTS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_LAYER_NAME = re.compile(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)")


def ggml_file_name(weight_type: str) -> str:
    return f"ggml-model-{weight_type}.bin"


def default_ggml_dir(source: ModelSource) -> Path:
    """Beside the model, as its CTranslate2 export: <run>/ggml for a run's final model."""
    if source.kind == "adapter":
        return adapter_home(source) / "ggml"
    if source.kind == "base":
        # <workspace>/model is vouched for by the manifest, so nothing is written inside it.
        return source.path.parent / "exports" / "base-ggml"
    if source.path.name == FINAL_FULL_DIR and source.run_dir is not None:
        return source.run_dir / "ggml"
    return source.path.parent / f"{source.path.name}-ggml"


def export_ggml(source: ModelSource, out_dir: Path | None = None, quantization: str = "q8_0") -> Path:
    """whisper.cpp export of a base, adapter (merged into a float32 copy of its base first) or full-weights model:
    <out_dir>/ggml-model-f16.bin, and <out_dir>/ggml-model-<quantization>.bin unless quantization is f16."""
    if quantization not in GGML_QUANTIZATIONS:
        raise ModelError(f"ggml_quantization={quantization!r} is not one of {', '.join(GGML_QUANTIZATIONS)}")
    if source.kind == "ct2":
        raise ModelError(f"{source.path} is a CTranslate2 export, which holds int8 or float16 weights only: export to "
                         "whisper.cpp from the model it was made from (the base, a run or a merged model)")
    window = trained_window(source)
    if window.is_fit:
        log.warning("%s was trained with a fitted encoder window (%s); whisper.cpp runs it at the full 30 s window, "
                    "which it was not tuned for: check its transcripts before shipping it", source.label, window.describe())
    out_dir = Path(out_dir) if out_dir else default_ggml_dir(source)
    check_replaceable(out_dir)
    # Merged here as export_ct2 merges (float32 on the CPU), in memory: the GGML file needs no transformers folder.
    model, processor = load_hf_model(source, torch.device("cpu"), torch.float32)
    header = _header(model.config)
    filters = _mel_filters(processor.feature_extractor, header["n_mels"])
    vocabulary = _text_tokens(processor.tokenizer, header["n_vocab"])
    tensors = _ggml_tensors(model.state_dict(), header)
    staged = staging_dir(out_dir)
    try:
        for weight_type in dict.fromkeys(("f16", quantization)):
            with open(staged / ggml_file_name(weight_type), "wb") as handle:
                _write_ggml(handle, header, filters, vocabulary, tensors, weight_type)
        atomic_write_json(staged / EXPORT_MARKER, source_fingerprint(source, format="ggml", quantization=quantization,
                                                                     ggml_qnt_version=GGML_QNT_VERSION))
        replace_folder(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("exported %s to whisper.cpp (GGML %s) in %s", source.label, quantization, out_dir)
    return out_dir


# ---- what goes into the file -----------------------------------------------------------------------------------


def _header(config) -> dict[str, int]:
    """whisper.cpp's hyperparameters, in file order (the weight type, last, is added per file)."""
    # whisper.cpp builds each layer with a 4 x d_model MLP, GELU and one width for encoder and decoder; a model that
    # differs would load as garbage or not at all, so it is refused here with the reason.
    if config.encoder_ffn_dim != 4 * config.d_model or config.decoder_ffn_dim != 4 * config.d_model:
        raise ModelError(f"whisper.cpp needs MLPs of 4 x d_model ({4 * config.d_model}); this model has "
                         f"{config.encoder_ffn_dim} (encoder) and {config.decoder_ffn_dim} (decoder)")
    if config.activation_function != "gelu":
        raise ModelError(f"whisper.cpp runs GELU layers; this model uses {config.activation_function}")
    return {
        "n_vocab": config.vocab_size,
        "n_audio_ctx": config.max_source_positions,
        "n_audio_state": config.d_model,
        "n_audio_head": config.encoder_attention_heads,
        "n_audio_layer": config.encoder_layers,
        "n_text_ctx": config.max_target_positions,
        "n_text_state": config.d_model,
        "n_text_head": config.decoder_attention_heads,
        "n_text_layer": config.decoder_layers,
        "n_mels": config.num_mel_bins,
    }


def _mel_filters(feature_extractor, n_mels: int) -> np.ndarray:
    """n_mels x (n_fft / 2 + 1) float32: transformers keeps the bank frequency-major, whisper.cpp reads it mel-major."""
    filters = np.asarray(feature_extractor.mel_filters, dtype=np.float32)
    if filters.shape[1] != n_mels:
        filters = filters.T
    if filters.shape[1] != n_mels:
        raise ModelError(f"the processor's mel filter bank is {filters.shape}, not {n_mels} mel bands")
    return np.ascontiguousarray(filters.T)


def _text_tokens(tokenizer, n_vocab: int) -> list[bytes]:
    """The byte string of every token before <|endoftext|>, as tiktoken holds them: whisper.cpp joins these bytes
    into text, and numbers the special tokens after them itself from n_vocab."""
    multilingual = n_vocab >= 51865  # whisper.cpp's own test; English-only models have 51864 tokens
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if end_of_text != (50257 if multilingual else 50256):
        raise ModelError(f"<|endoftext|> is token {end_of_text} in this tokenizer, where whisper.cpp expects "
                         f"{50257 if multilingual else 50256} for a vocabulary of {n_vocab}: not a Whisper tokenizer")
    byte_of = {character: byte for byte, character in bytes_to_unicode().items()}
    tokens = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(end_of_text)))):
        try:
            tokens.append(bytes(byte_of[character] for character in token))
        except (KeyError, TypeError):
            raise ModelError(f"token {token_id} ({token!r}) is not a byte-level BPE token: not a Whisper tokenizer") from None
    return tokens


def _ggml_name(hf_name: str) -> str | None:
    """openai/whisper's name for a transformers Whisper tensor; None for proj_out, which whisper.cpp does not read."""
    if hf_name == "proj_out.weight":
        return None
    if hf_name in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[hf_name]
    match = _LAYER_NAME.fullmatch(hf_name)
    if match is None or match[3] not in _LAYER_PARTS:
        raise ModelError(f"{hf_name} is not a tensor of OpenAI Whisper's architecture; whisper.cpp cannot run this model")
    stack, layer, part, kind = match.groups()
    return f"{stack}.blocks.{layer}.{_LAYER_PARTS[part]}.{kind}"


def _ggml_tensors(state_dict: dict[str, torch.Tensor], header: dict[str, int]) -> dict[str, np.ndarray]:
    """openai name -> float32 array in whisper.cpp's shape (conv biases [n, 1])."""
    projection, embedding = state_dict.get("proj_out.weight"), state_dict["model.decoder.embed_tokens.weight"]
    if projection is not None and not torch.equal(projection, embedding):
        raise ModelError("this model's output projection (proj_out) differs from its token embedding; whisper.cpp "
                         "ties the two, so it would run another model")
    tensors = {}
    for hf_name, tensor in state_dict.items():
        name = _ggml_name(hf_name)
        if name is None:
            continue
        array = tensor.detach().to(torch.float32).numpy()
        tensors[name] = array.reshape(-1, 1) if name in ("encoder.conv1.bias", "encoder.conv2.bias") else array
    expected = 11 + 15 * header["n_audio_layer"] + 24 * header["n_text_layer"]  # every tensor whisper.cpp loads
    if len(tensors) != expected:
        raise ModelError(f"found {len(tensors)} Whisper tensors where whisper.cpp loads {expected}")
    return tensors


# ---- writing -----------------------------------------------------------------------------------------------------


def _tensor_type(name: str, array: np.ndarray, weight_type: str) -> int:
    if name in _ALWAYS_F32 or array.ndim == 1:
        return GGML_TYPE_F32
    if array.ndim == 3:
        return GGML_TYPE_F16  # the conv kernels: whisper.cpp quantizes matrices only, and reads these as float16
    return _TENSOR_TYPES[weight_type]


def _write_ggml(handle: BinaryIO, header: dict[str, int], filters: np.ndarray, vocabulary: list[bytes],
                tensors: dict[str, np.ndarray], weight_type: str) -> None:
    handle.write(struct.pack("<12i", GGML_FILE_MAGIC, *header.values(), _FILE_TYPES[weight_type]))
    handle.write(struct.pack("<2i", *filters.shape))
    handle.write(filters.astype("<f4").tobytes())
    handle.write(struct.pack("<i", len(vocabulary)))
    for token in vocabulary:
        handle.write(struct.pack("<i", len(token)) + token)
    for name, array in tensors.items():
        tensor_type = _tensor_type(name, array, weight_type)
        encoded = name.encode("utf-8")
        handle.write(struct.pack(f"<{3 + array.ndim}i", array.ndim, len(encoded), tensor_type, *reversed(array.shape)))
        handle.write(encoded)
        handle.write(_tensor_bytes(name, array, tensor_type))


def _tensor_bytes(name: str, array: np.ndarray, tensor_type: int) -> bytes:
    if tensor_type == GGML_TYPE_F32:
        return array.astype("<f4").tobytes()
    if tensor_type == GGML_TYPE_F16:
        return array.astype("<f2").tobytes()
    if array.shape[-1] % QUANT_BLOCK:
        raise ModelError(f"{name} has rows of {array.shape[-1]} weights, which ggml cannot cut into blocks of {QUANT_BLOCK}: "
                         "export it with quantization=f16")
    blocks = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, QUANT_BLOCK)
    return quantize_q8_0(blocks) if tensor_type == GGML_TYPE_Q8_0 else quantize_q5_0(blocks)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's roundf, which ggml uses; numpy's round goes to even on halves."""
    return np.sign(values) * np.floor(np.abs(values.astype(np.float64)) + 0.5)


def quantize_q8_0(blocks: np.ndarray) -> bytes:
    """ggml's quantize_row_q8_0_ref on rows of 32 float32 weights: per block a float16 scale d = max|x| / 127, then 32
    int8 values round(x / d). Returns the blocks as ggml lays them out (2 + 32 bytes each)."""
    scale = np.abs(blocks).max(axis=1) / np.float32(127)
    inverse = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale != 0)
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("qs", "i1", QUANT_BLOCK)])
    out["d"] = scale
    out["qs"] = _round_half_away(blocks * inverse[:, None])
    return out.tobytes()


def quantize_q5_0(blocks: np.ndarray) -> bytes:
    """ggml's quantize_row_q5_0_ref on rows of 32 float32 weights: per block a float16 scale d = m / -16, m the weight of
    largest magnitude (its sign kept, so m itself lands on 0), then 32 five-bit values x / d + 16, stored as 16 bytes of
    low nibbles (weight j in the low half of byte j, weight j + 16 in the high half) and a 32-bit word of fifth bits.
    Returns the blocks as ggml lays them out (2 + 4 + 16 bytes each)."""
    largest = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)[:, 0]  # the first, as ggml's loop
    scale = largest / np.float32(-16)
    inverse = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale != 0)
    # (int8_t)(x + 16.5f) truncates toward zero; x + 16.5 is never below 0, so that is a floor.
    values = np.minimum(31, np.trunc(blocks * inverse[:, None] + np.float32(16.5))).astype(np.uint32)
    low, high = values[:, : QUANT_BLOCK // 2], values[:, QUANT_BLOCK // 2:]
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("qh", "<u4"), ("qs", "u1", QUANT_BLOCK // 2)])
    out["d"] = scale
    out["qh"] = ((values >> 4) << np.arange(QUANT_BLOCK, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    out["qs"] = (low & 0x0F) | ((high & 0x0F) << 4)
    return out.tobytes()
