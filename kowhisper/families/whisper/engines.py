"""Whisper decoding engines: transformers and CTranslate2, one greedy recipe behind both.

`load_engine` turns a `ModelSource` into an engine whose `generate` takes padded log-mel batches and returns
token ids, so evaluation, the CLI and the demo share one code path:

- transformers ("hf"): the LoRA adapter is merged into a float copy of the base in memory, so generation runs
  plain Linear layers (an unmerged adapter costs an extra matmul per projection, and an 8-bit base is a known
  2-5x slowdown). fp16 on CUDA, bf16 autocast on CPUs that do bf16 in hardware, fp32 elsewhere: emulated
  bf16 is slower than fp32.
- CTranslate2 ("ct2"): an int8 export, the fastest path on CPUs with or without native bf16 (measured in
  bench/RESULTS.md, "Inference speed"), so backend=auto picks it on every CPU and exports the model once.

Each engine runs the model at the encoder window it was trained with: Whisper's 30 s for a base model, a window
fitted to each batch for a model fine-tuned that way (kowhisper.families.whisper.encoder_window).

Decoding is greedy with the language and task given explicitly, never detected: zero-shot Whisper can take
Korean for another language, and a fine-tuned adapter was trained with these prompt tokens. Both engines also
report each row's mean token log-probability and Whisper's no-speech probability, which long-form decoding uses
to tell silence from speech (kowhisper.families.whisper.longform).

Text is decoded at whole characters only. Whisper's byte-level tokens can split a Hangul syllable (3 UTF-8
bytes) over two tokens, and a segment boundary, a token cap or a model's slip can leave half of one; the
tokenizer would write U+FFFD there. `text_bytes` and `text_of` keep the bytes, so a split syllable is joined
across segments (long-form decoding feeds them to an incremental UTF-8 decoder) and a fragment that never completes
is dropped.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import ctranslate2
import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from kowhisper.common.cpu import cpu_has_native_bf16
from kowhisper.common.errors import ConfigError
from kowhisper.common.transcript import Prompting
from kowhisper.config import Config
from kowhisper.families.base import ModelSource, cpu_threads, pick_device
from kowhisper.families.whisper.alignment import TokenTiming, cross_attention_path, timings_from_path
from kowhisper.families.whisper.ct2_export import ensure_ct2_export
from kowhisper.families.whisper.encoder_window import EncoderWindow, allow_fitted_window
from kowhisper.families.whisper.loading import load_hf_model, load_processor, trained_window

log = logging.getLogger("kowhisper")

# A repetition loop otherwise runs to the token cap (225 steps for a 3 s clip). Fast Korean speech is about
# 8 syllables a second and a rare syllable costs up to 3 byte-level tokens, so 25 tokens a second plus a
# margin never cuts real speech short (the bundled sample peaks at 6 a second).
MAX_TOKENS_PER_SECOND = 25
TOKEN_MARGIN = 20
# Decoder positions of every Whisper size, shared by prompt and output.
WHISPER_TEXT_POSITIONS = 448
# Whisper's seconds per timestamp token.
TIME_PRECISION = 0.02
# Prompt tokens Whisper reads after <|startofprev|>: n_ctx // 2 - 1, as openai/whisper and faster-whisper cut them.
MAX_PROMPT_TOKENS = WHISPER_TEXT_POSITIONS // 2 - 1


@dataclass
class Generation:
    """One decoded row: its ids (timestamp tokens included when asked; no prompt, no end token), the mean
    log-probability of its tokens and end token (openai/whisper's avg_logprob), and the probability Whisper gave
    <|nocaptions|> at the start of the transcript, its own no-speech detector."""

    ids: list[int]
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True)
class Decoding:
    """The prompt and length limit every engine decodes with."""

    language: str  # Whisper language code, e.g. "ko"
    task: str = "transcribe"
    max_new_tokens: int = 225
    prompting: Prompting = Prompting()  # what a recording is prompted with unless it brings its own

    @classmethod
    def from_config(cls, config: Config) -> Decoding:
        return cls(language_code(config.language, config.language_abbr), config.task, config.generation_max_length,
                   Prompting.from_config(config))

    def tokens_for(self, seconds: float) -> int:
        """New-token budget for audio of this length (the longest clip of a batch)."""
        return max(1, min(self.max_new_tokens, math.ceil(seconds * MAX_TOKENS_PER_SECOND) + TOKEN_MARGIN))


def language_code(language: str, fallback: str) -> str:
    """Whisper's code for a language given by name ("Korean") or code ("ko")."""
    for candidate in (language, fallback):
        key = str(candidate).strip().lower()
        if key in LANGUAGES:
            return key
        if key in TO_LANGUAGE_CODE:
            return TO_LANGUAGE_CODE[key]
    raise ConfigError(f"language={language!r} (language_abbr={fallback!r}) is not a language Whisper knows")


def choose_engine(requested: str, source: ModelSource) -> str:
    """backend=auto: transformers on CUDA (fp16), the CTranslate2 int8 export on every CPU. On CPUs without
    native bf16 int8 CTranslate2 beats fp32 transformers; on CPUs with AMX it still beats transformers bf16
    (bench/RESULTS.md, "Inference speed"), so the CPU's bf16 support does not change the choice."""
    if source.kind == "ct2":
        if requested == "hf":
            raise ConfigError(f"{source.path} is a CTranslate2 export; it runs with backend=ct2 or auto, not hf")
        return "ct2"
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "hf"
    return "ct2"


class WhisperEngine(ABC):
    """Greedy Whisper decoding over (batch, n_mels, frames) log-mel tensors, where frames is what `window`
    gives for the batch: 3000 for Whisper's own window, fewer for a model fine-tuned on fitted windows."""

    engine = ""
    text_positions = WHISPER_TEXT_POSITIONS  # decoder positions, shared by prompt and output
    # Rows this engine decodes at the same time on separate cores; long-form decoding splits a lone recording
    # into this many parts so that none sits idle.
    parallel_streams = 1

    def __init__(self, processor, decoding: Decoding, description: str, window: EncoderWindow):
        self.window = window
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.feature_extractor = processor.feature_extractor
        self.decoding = decoding
        self.description = description
        self.end_of_text = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        no_timestamps = self.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        self.timestamp_begin = no_timestamps + 1
        # <|nocaptions|> (later named <|nospeech|>) sits just before <|notimestamps|> in every Whisper vocabulary.
        self.no_speech_token = no_timestamps - 1
        self._contexts: dict[tuple[Prompting, bool], tuple[int, ...]] = {}

    def context_ids(self, prompting: Prompting, first_window: bool) -> tuple[int, ...]:
        """<|startofprev|> and the text Whisper reads before a window: the hotwords, then on a recording's first window
        the initial prompt (faster-whisper's order), cut to MAX_PROMPT_TOKENS with a message; empty without either."""
        key = (prompting, first_window)
        if key not in self._contexts:
            hotwords = " ".join(prompting.hotwords)
            prompt = prompting.initial_prompt if first_window else ""
            hotword_ids = self.tokenizer.encode(" " + hotwords, add_special_tokens=False) if hotwords else []
            prompt_ids = self.tokenizer.encode(" " + prompt, add_special_tokens=False) if prompt else []
            if len(hotword_ids) + len(prompt_ids) > MAX_PROMPT_TOKENS:
                # Hotwords first, as the user listed them; then the end of the prompt, the text nearest the speech.
                kept_hotwords = hotword_ids[:MAX_PROMPT_TOKENS]
                room = MAX_PROMPT_TOKENS - len(kept_hotwords)
                kept_prompt = prompt_ids[len(prompt_ids) - room :] if room else []
                log.warning("hotwords and initial_prompt are %d tokens; Whisper reads at most %d before a window: kept %d "
                            "hotword tokens and the last %d of the prompt", len(hotword_ids) + len(prompt_ids),
                            MAX_PROMPT_TOKENS, len(kept_hotwords), len(kept_prompt))
                hotword_ids, prompt_ids = kept_hotwords, kept_prompt
            text = [*hotword_ids, *prompt_ids]
            self._contexts[key] = (self.tokenizer.convert_tokens_to_ids("<|startofprev|>"), *text) if text else ()
        return self._contexts[key]

    def prompt_ids(self, timestamps: bool, context: tuple[int, ...] = ()) -> list[int]:
        """The decoder's prompt: `context` (context_ids), then Whisper's start of a transcript."""
        return [*context, *self.start_of_transcript[timestamps]]

    @cached_property
    def start_of_transcript(self) -> dict[bool, list[int]]:
        """Whisper's own start of a transcript, with timestamps (True) or without."""
        tokens = ["<|startoftranscript|>", f"<|{self.decoding.language}|>", f"<|{self.decoding.task}|>"]
        return {True: self.tokenizer.convert_tokens_to_ids(tokens),
                False: self.tokenizer.convert_tokens_to_ids([*tokens, "<|notimestamps|>"])}

    def generate(self, features: torch.Tensor, *, timestamps: bool, max_new_tokens: int, no_repeat_ngram_size: int = 0,
                 contexts: list[tuple[int, ...]] | None = None) -> list[Generation]:
        """One Generation per row. `no_repeat_ngram_size` > 0 forbids repeating any token n-gram of that size
        (the loop fallback). `contexts` gives each row's context_ids; unset, every row is a first window prompted as
        the config says. Rows with the same prompt are decoded together."""
        if contexts is None:
            contexts = [self.context_ids(self.decoding.prompting, True)] * len(features)
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, context in enumerate(contexts):
            groups.setdefault(tuple(context), []).append(row)
        generations: list[Generation | None] = [None] * len(features)
        for context, rows in groups.items():
            prompt = self.prompt_ids(timestamps, context)
            selected = features if len(rows) == len(features) else features[rows]
            # Whisper's decoder has text_positions slots, shared by prompt and output.
            budget = min(max_new_tokens, self.text_positions - len(prompt))
            for row, generation in zip(rows, self._generate(selected, prompt, timestamps=timestamps, max_new_tokens=budget,
                                                            no_repeat_ngram_size=no_repeat_ngram_size)):
                generations[row] = generation
        return generations

    @abstractmethod
    def _generate(self, features: torch.Tensor, prompt: list[int], *, timestamps: bool, max_new_tokens: int,
                  no_repeat_ngram_size: int) -> list[Generation]:
        """One Generation per row, every row decoded after `prompt` (prompt_ids)."""

    def align(self, features: torch.Tensor, texts: list[list[int]], audio_frames: list[int]) -> list[list[TokenTiming]]:
        """Per row, a TokenTiming for each of the text tokens `texts` gives it (kowhisper.families.whisper.alignment);
        `audio_frames`, the mel frames of each row that hold audio. A row without text gets none."""
        rows = [row for row, text in enumerate(texts) if text]
        timings: list[list[TokenTiming]] = [[] for _ in texts]
        if rows:
            found = self._align(features[rows], [texts[row] for row in rows], [audio_frames[row] for row in rows])
            for row, row_timings in zip(rows, found):
                timings[row] = row_timings
        return timings

    @abstractmethod
    def _align(self, features: torch.Tensor, texts: list[list[int]], audio_frames: list[int]) -> list[list[TokenTiming]]:
        """align() for rows that all have text."""

    def _trim(self, ids: list[int]) -> list[int]:
        return ids[: ids.index(self.end_of_text)] if self.end_of_text in ids else ids

    @cached_property
    def _byte_of_char(self) -> dict[str, int]:
        return {char: byte for byte, char in bytes_to_unicode().items()}

    def text_tokens(self, ids: list[int]) -> list[int]:
        """The text tokens among `ids`: every id below <|endoftext|>, after which Whisper's special tokens and
        timestamps come."""
        return [i for i in ids if i < self.end_of_text]

    def text_bytes(self, ids: list[int]) -> bytes:
        """The UTF-8 bytes the text tokens among `ids` stand for (timestamps and other special tokens skipped)."""
        tokens = self.tokenizer.convert_ids_to_tokens(self.text_tokens(ids))
        # Every text token of Whisper's vocabulary is byte-level; anything else is taken as the text it shows.
        return b"".join(bytes([self._byte_of_char[char]]) if char in self._byte_of_char else char.encode()
                        for token in tokens for char in token)

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`, trimmed, at whole characters only."""
        return text_of(self.text_bytes(ids))


def text_of(data: bytes) -> str:
    """Text of UTF-8 bytes, dropping what is not a whole character instead of writing U+FFFD."""
    return data.decode("utf-8", errors="ignore").strip()


class HFWhisper(WhisperEngine):
    """On CPU the encoder runs one clip at a time and only the decoder on the batch: a batch of 30 s windows
    does not fit the cache, and one clip at a time took about 20% less time here (whisper-base, 8 clips,
    bit-identical output). On CUDA the encoder runs on the whole batch."""

    engine = "hf"

    def __init__(self, model, processor, decoding: Decoding, device: torch.device, window: EncoderWindow | None = None):
        window = window or EncoderWindow()
        self.model = allow_fitted_window(model) if window.is_fit else model
        self.device = device
        self.autocast_dtype = torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
        precision = "bf16 autocast" if self.autocast_dtype else str(model.dtype).removeprefix("torch.")
        super().__init__(processor, decoding, f"transformers {precision} on {device.type}", window)
        self.text_positions = model.config.max_target_positions

    def _generate(self, features: torch.Tensor, prompt: list[int], *, timestamps: bool, max_new_tokens: int,
                  no_repeat_ngram_size: int) -> list[Generation]:
        features = features.to(self.device, self.model.dtype)
        context = prompt[: prompt.index(self.model.config.decoder_start_token_id)]
        autocast = torch.autocast("cpu", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        chosen = _ChosenTokenLogprobs()
        with torch.inference_mode(), autocast:
            if self.device.type == "cpu":
                encoded = torch.cat([self.model.model.encoder(row[None]).last_hidden_state for row in features])
            else:
                encoded = self.model.model.encoder(features).last_hidden_state
            sequences = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                attention_mask=torch.ones(features.shape[0], features.shape[-1], dtype=torch.long, device=self.device),
                language=self.decoding.language,
                task=self.decoding.task,
                return_timestamps=timestamps,
                # One pass per 30 s window: without it, a window whose last segment is unfinished is decoded
                # again from that point, and the returned timestamps of the two passes share no origin. Seeking
                # through long audio is kowhisper.families.whisper.longform's job, the same for both engines.
                force_unique_generate_call=True,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                no_repeat_ngram_size=no_repeat_ngram_size,
                logits_processor=LogitsProcessorList([chosen]),
                # The prompt before <|startoftranscript|>; transformers puts it in front of the rows it returns.
                **({"prompt_ids": torch.tensor(context, device=self.device)} if context else {}),
            )
            no_speech = self._no_speech_probs(encoded)
        # With force_unique_generate_call the rows start with the prompt; strip it where it is there.
        rows = [row[len(prompt):] if row[: len(prompt)] == prompt else row for row in sequences.tolist()]
        logprobs = chosen.per_row(sequences[:, -1])
        generations = []
        for ids, row_logprobs, no_speech_prob in zip(rows, logprobs, no_speech.tolist()):
            trimmed = self._trim(ids)
            # The steps of this row's tokens and its end token; finished rows are padded after that.
            counted = row_logprobs[len(row_logprobs) - len(ids) :][: len(trimmed) + 1]
            generations.append(Generation(trimmed, float(counted.sum()) / (len(trimmed) + 1), no_speech_prob))
        return generations

    def _no_speech_probs(self, encoded: torch.Tensor) -> torch.Tensor:
        """P(<|nocaptions|>) right after <|startoftranscript|>, per row, as openai/whisper reads it."""
        start = torch.full((encoded.shape[0], 1), self.model.config.decoder_start_token_id, device=encoded.device)
        hidden = self.model.model.decoder(input_ids=start, encoder_hidden_states=encoded).last_hidden_state
        logits = self.model.proj_out(hidden[:, 0]).float()
        return logits.softmax(-1)[:, self.no_speech_token].cpu()

    def _align(self, features: torch.Tensor, texts: list[list[int]], audio_frames: list[int]) -> list[list[TokenTiming]]:
        """The text read once more after Whisper's start of a transcript (no timestamps, as CTranslate2 aligns), one row
        at a time, with the alignment heads' cross-attention kept; the rest is kowhisper.families.whisper.alignment."""
        # sdpa attention never returns its weights: eager for this reading only, and back for generation.
        implementation = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            timings = self._align_rows(features, texts, audio_frames)
        finally:
            self.model.set_attn_implementation(implementation)
        return timings

    def _align_rows(self, features: torch.Tensor, texts: list[list[int]], audio_frames: list[int]) -> list[list[TokenTiming]]:
        heads = alignment_heads(self.model)
        start = self.start_of_transcript[False]
        autocast = torch.autocast("cpu", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        timings = []
        with torch.inference_mode(), autocast:
            for row, text, frames in zip(features, texts, audio_frames):
                encoded = self.model.model.encoder(row[None].to(self.device, self.model.dtype)).last_hidden_state
                tokens = torch.tensor([[*start, *text, self.end_of_text]], device=self.device)
                decoded = self.model.model.decoder(input_ids=tokens, encoder_hidden_states=encoded, output_attentions=True)
                # Rows from the step that writes the first text token to the one that writes the end token.
                reading = slice(len(start) - 1, len(start) + len(text))
                weights = torch.stack([decoded.cross_attentions[layer][0, head, reading] for layer, head in heads])
                logits = self.model.proj_out(decoded.last_hidden_state[0, reading][:-1]).float()
                probabilities = logits.softmax(-1).gather(1, torch.tensor(text, device=self.device)[:, None])[:, 0]
                token_rows, frame_columns = cross_attention_path(weights.float().cpu().numpy(), math.ceil(frames / 2))
                timings.append(timings_from_path(token_rows, frame_columns, probabilities.cpu().tolist()))
        return timings


class _ChosenTokenLogprobs:
    """A logits processor, run after all others, that records the log-probability of each token generate()
    picks: the processed distribution of one step is kept until the next step shows which token was taken."""

    def __init__(self):
        self.pending: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.steps.append(self.pending.gather(1, input_ids[:, -1:])[:, 0])
        self.pending = scores.float().log_softmax(-1)
        return scores

    def per_row(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(batch, generated steps) log-probabilities; `last_tokens` are the tokens of the final step."""
        steps = list(self.steps)
        if self.pending is not None:
            steps.append(self.pending.gather(1, last_tokens[:, None].to(self.pending.device))[:, 0])
        return torch.stack(steps, dim=1).cpu() if steps else torch.zeros(len(last_tokens), 0)


class CT2Whisper(WhisperEngine):
    engine = "ct2"

    def __init__(self, ct2_dir: Path, processor, decoding: Decoding, parallel_clips: bool = True,
                 window: EncoderWindow | None = None):
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        # On CPU, for throughput: one single-threaded worker per core, each decoding its own clips. Whisper's
        # ops on one short clip do not keep several threads busy; on 2 cores here this was about 1.3x faster
        # over a batch than intra-op threads (bench/RESULTS.md). The workers share one copy of the weights.
        # One clip alone, though, then gets one core: 1.69 s instead of 1.21 s for a 3 s clip here. So the
        # demo, which serves one recording at a time, asks for parallel_clips=False and all cores per clip.
        workers = cpu_threads() if device == "cpu" and parallel_clips else 1
        threads = {"inter_threads": workers, "intra_threads": cpu_threads() // workers} if device == "cpu" else {}
        self.parallel_clips = workers > 1
        self.parallel_streams = workers
        # "default" keeps the type the export was written in (int8 stays int8, float32 stays float32).
        self.model = ctranslate2.models.Whisper(str(ct2_dir), device=device, compute_type="default", **threads)
        # CTranslate2 takes fewer than 3000 frames as they are (since its PR 1446) and slices its positions.
        super().__init__(processor, decoding, f"CTranslate2 {self.model.compute_type} on {device}", window or EncoderWindow())
        self.text_positions = WHISPER_TEXT_POSITIONS

    def _generate(self, features: torch.Tensor, prompt: list[int], *, timestamps: bool, max_new_tokens: int,
                  no_repeat_ngram_size: int) -> list[Generation]:
        array = np.ascontiguousarray(features.to(torch.float32).numpy())
        # CTranslate2 counts the prompt in max_length; this gives the same decoding steps as transformers'
        # max_new_tokens (whose count includes the end token).
        options = {"beam_size": 1, "max_length": len(prompt) + max_new_tokens,
                   "no_repeat_ngram_size": no_repeat_ngram_size, "return_scores": True, "return_no_speech_prob": True}
        if self.parallel_clips:
            # One clip per request, spread over the workers (see __init__); results come back in order.
            pending = [self.model.generate(ctranslate2.StorageView.from_array(array[i : i + 1]), [prompt], asynchronous=True, **options)[0]
                       for i in range(len(array))]
            results = [request.result() for request in pending]
        else:
            results = self.model.generate(ctranslate2.StorageView.from_array(array), [prompt] * len(array), **options)
        generations = []
        for result in results:
            ids = self._trim(result.sequences_ids[0])
            # The score is the summed log-probability over the generated length (length_penalty 1); as
            # faster-whisper does, it is averaged over the tokens plus the end token.
            generations.append(Generation(ids, result.scores[0] * len(ids) / (len(ids) + 1), result.no_speech_prob))
        return generations

    def _align(self, features: torch.Tensor, texts: list[list[int]], audio_frames: list[int]) -> list[list[TokenTiming]]:
        """CTranslate2's own alignment (Whisper.align, with the heads its export carries), as faster-whisper calls it."""
        array = np.ascontiguousarray(features.to(torch.float32).numpy())
        results = self.model.align(ctranslate2.StorageView.from_array(array), self.start_of_transcript[False], texts,
                                   audio_frames)
        timings = []
        for result, text in zip(results, texts):
            path = np.array(result.alignments).reshape(-1, 2)
            timings.append(timings_from_path(path[:, 0], path[:, 1], list(result.text_token_probs)[: len(text)]))
        return timings


def alignment_heads(model) -> list[tuple[int, int]]:
    """(decoder layer, head) pairs whose cross-attention follows the audio: the model's own (generation_config, as
    OpenAI chose them for each size), else every head of the decoder's second half, as CTranslate2 takes them for a
    model that names none."""
    named = getattr(model.generation_config, "alignment_heads", None)
    if named:
        return [(int(layer), int(head)) for layer, head in named]
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
    return [(layer, head) for layer in range(layers // 2, layers) for head in range(heads)]


def load_engine(source: ModelSource, decoding: Decoding, backend: str = "auto", ct2_quantization: str = "int8",
                ct2_dir: Path | None = None, parallel_clips: bool = True) -> WhisperEngine:
    """The engine `backend` asks for (see `choose_engine`), running `source` at the window it was trained with.
    For ct2 a non-ct2 source is exported once to `ct2_dir` (default: beside the adapter, see
    kowhisper.families.whisper.ct2_export.default_ct2_dir) and reused while it is current. parallel_clips=False tunes
    CTranslate2 on CPU for one clip at a time (latency) instead of batches."""
    engine = choose_engine(backend, source)
    window = trained_window(source)
    if engine == "ct2":
        ct2_path = source.path if source.kind == "ct2" else ensure_ct2_export(source, ct2_quantization, ct2_dir)
        return CT2Whisper(ct2_path, load_processor(ct2_path), decoding, parallel_clips, window)
    device = pick_device()
    model, processor = load_hf_model(source, device)
    return HFWhisper(model, processor, decoding, device, window)
