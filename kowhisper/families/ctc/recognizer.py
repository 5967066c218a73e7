"""CTC transcribing: prepared rows for evaluation, and audio of any length for inference.py and the demo.

Decoding is greedy: the most likely token of every output frame, repeats collapsed, blanks removed. It never loops
and needs no token budget.

Long audio is cut into CHUNK_S chunks that overlap by 2 x STRIDE_S; of each chunk only the middle is kept (the
first chunk keeps its start, the last its end), so no frame is read near an edge where the model lacks context,
and the kept parts join without a gap or an overlap. The last chunk is moved back to end at the audio's end, so it
is never a sliver. Frames carry their time (frame index x the model's samples per frame), so each word gets the
span from its first to its last frame; words become segments at pauses of PAUSE_S or more, and a segment is closed
before it grows past MAX_SEGMENT_S. Times are therefore monotonic and inside the clip, for json and srt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCTC

from kowhisper.common.audio import SAMPLING_RATE, from_int16
from kowhisper.common.runtime import peft_checkpointing_alias_quiet
from kowhisper.common.transcript import Segment, Transcript, Word
from kowhisper.families.base import ModelError, Recognizer
from kowhisper.families.ctc.storage import FrameGeometry, load_processor
from kowhisper.families.ctc.vocabulary import WORD_DELIMITER, decode_ids

CHUNK_S = 20.0
STRIDE_S = 2.0
PAUSE_S = 0.5
MAX_SEGMENT_S = 15.0


@dataclass(frozen=True)
class Chunk:
    waveform: int  # index into the waveforms
    start: int  # samples read by the model
    end: int
    keep_start: int  # samples whose frames are kept
    keep_end: int


def plan_chunks(index: int, samples: int, chunk: int = int(CHUNK_S * SAMPLING_RATE),
                stride: int = int(STRIDE_S * SAMPLING_RATE)) -> list[Chunk]:
    if samples <= chunk:
        return [Chunk(index, 0, samples, 0, samples)]
    starts = list(range(0, samples - chunk, chunk - 2 * stride)) + [samples - chunk]
    chunks, kept_until = [], 0
    for number, start in enumerate(starts):
        last = number == len(starts) - 1
        keep_end = samples if last else start + chunk - stride
        chunks.append(Chunk(index, start, start + chunk, kept_until, keep_end))
        kept_until = keep_end
    return chunks


def words_from_frames(ids: np.ndarray, times: np.ndarray, probabilities: np.ndarray, frame_s: float, vocabulary: list[str],
                      pad: int, unk: int) -> list[Word]:
    """Words with the time of their first frame and the end of their last one, from greedy ids per frame; a word's
    probability is the mean, over its frames that are not blank, of the probability the model gave the frame's id."""
    words: list[Word] = []
    current: Word | None = None
    previous, word_probabilities = None, []

    def finish():
        if current is not None:
            current.probability = round(float(np.mean(word_probabilities)), 3) if word_probabilities else 0.0
            words.append(current)

    for token, time, probability in zip((int(i) for i in ids), times, probabilities):
        if token == previous and current is not None and token != pad:
            current.end = float(time) + frame_s
            word_probabilities.append(float(probability))
            continue
        previous = token
        if token == pad or token == unk or not 0 <= token < len(vocabulary):
            continue
        if vocabulary[token] == WORD_DELIMITER:
            finish()
            current, word_probabilities = None, []
            continue
        if current is None:
            current = Word(float(time), float(time) + frame_s, "", 0.0)
        current.word += vocabulary[token]
        current.end = float(time) + frame_s
        word_probabilities.append(float(probability))
    finish()
    return words


def segments_from_words(words: list[Word], duration: float, keep_words: bool = False) -> list[Segment]:
    """Words grouped into segments at pauses (PAUSE_S) and before MAX_SEGMENT_S; `keep_words`: each segment keeps its
    words (word timestamps)."""
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < PAUSE_S and word.end - groups[-1][0].start <= MAX_SEGMENT_S:
            groups[-1].append(word)
        else:
            groups.append([word])
    segments, previous_end = [], 0.0
    for group in groups:
        start = min(max(group[0].start, previous_end), duration)
        end = min(max(group[-1].end, start), duration)
        segment = Segment(round(start, 2), round(end, 2), " ".join(word.word for word in group))
        if keep_words:
            segment.words = group
            segment.keep_words_inside()
        segments.append(segment)
        previous_end = end
    return segments


class CTCRecognizer(Recognizer):
    def __init__(self, model, processor, geometry: FrameGeometry, device: torch.device, dtype: torch.dtype):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.geometry = geometry
        self.device, self.dtype = device, dtype
        self.vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self.description = f"transformers CTC greedy, {str(dtype).removeprefix('torch.')} on {device.type}"

    def greedy_ids(self, waveforms: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per waveform, the most likely token of each of its own output frames and its probability (padding frames
        cut off)."""
        inputs = self.processor.feature_extractor(waveforms, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        inputs = {key: value.to(self.device, dtype=self.dtype if value.is_floating_point() else value.dtype)
                  for key, value in inputs.items()}
        with torch.inference_mode():
            probabilities, ids = self.model(**inputs).logits.float().softmax(-1).max(-1)
        return [(row[:frames], row_probabilities[:frames]) for row, row_probabilities, frames in
                zip(ids.cpu().numpy(), probabilities.cpu().numpy(), (self.geometry.output_frames(len(w)) for w in waveforms))]

    def transcribe_prepared(self, rows: list[dict]) -> list[str]:
        if any("audio" not in row for row in rows):
            raise ModelError("this split holds no audio samples: it was prepared for a Whisper model. Evaluate a CTC model on "
                             "a workspace prepared with a CTC base (the same source, its own online setup)")
        return [decode_ids(self.tokenizer, ids, group=True) for ids, _ in self.greedy_ids([from_int16(row["audio"]) for row in rows])]

    def transcribe_waveforms(self, waveforms, *, batch_size, sources=None, bar=None, promptings=None,
                             word_timestamps=False) -> list[Transcript]:
        # A CTC model reads no text before the audio: prompts and hotwords have nothing to go to (the config keys are
        # reported as ignored for this family; per-file ones are passed over).
        usable = [index for index, waveform in enumerate(waveforms) if len(waveform) >= self.geometry.receptive_field]
        chunks = [chunk for index in usable for chunk in plan_chunks(index, len(waveforms[index]))]
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].end - chunks[i].start, reverse=True)
        if bar is not None:
            bar.total = (bar.total or 0) + round(sum(len(waveforms[index]) for index in usable) / SAMPLING_RATE)
            bar.refresh()
        chunk_ids: dict[int, np.ndarray] = {}
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            pieces = [np.asarray(waveforms[chunks[i].waveform][chunks[i].start : chunks[i].end], dtype=np.float32) for i in batch]
            chunk_ids.update(zip(batch, self.greedy_ids(pieces)))
            if bar is not None:
                bar.update(sum(chunks[i].keep_end - chunks[i].keep_start for i in batch) / SAMPLING_RATE)

        frame_samples = self.geometry.samples_per_frame
        frame_s = frame_samples / SAMPLING_RATE
        per_waveform: dict[int, tuple[list, list, list]] = {index: ([], [], []) for index in usable}
        for i, chunk in enumerate(chunks):
            first = round((chunk.keep_start - chunk.start) / frame_samples)
            last = round((chunk.keep_end - chunk.start) / frame_samples)
            ids, probabilities = (part[first:last] for part in chunk_ids[i])
            per_waveform[chunk.waveform][0].append(ids)
            per_waveform[chunk.waveform][1].append((chunk.start / SAMPLING_RATE) + (first + np.arange(len(ids))) * frame_s)
            per_waveform[chunk.waveform][2].append(probabilities)

        transcripts = []
        for index, waveform in enumerate(waveforms):
            duration = round(len(waveform) / SAMPLING_RATE, 3)
            transcript = Transcript(sources[index] if sources else f"audio {index}", duration, "")
            if index in per_waveform:
                ids, times, probabilities = (np.concatenate(parts) if parts else np.zeros(0) for parts in per_waveform[index])
                words = words_from_frames(ids, times, probabilities, frame_s, self.vocabulary, self.tokenizer.pad_token_id,
                                          self.tokenizer.unk_token_id)
                # A CTC model's words are timed by its own frames: word timestamps cost nothing more.
                transcript.segments = segments_from_words(words, duration, keep_words=word_timestamps)
            transcript.text = " ".join(segment.text for segment in transcript.segments)
            transcripts.append(transcript)
        return transcripts


def load_model(source, device: torch.device, dtype: torch.dtype):
    """(model, processor, geometry) of a ModelSource in eval mode: the base with a head for its vocabulary, a LoRA
    adapter merged into a float copy of it, or a full model folder. safetensors only, no repository code."""
    if source.kind == "ct2":
        raise ModelError("CTranslate2 runs Whisper models only; serve a CTC model with backend=hf (or auto)")
    processor = load_processor(source.path)
    tokenizer = processor.tokenizer
    # Never trained on this vocabulary (a base whose head is a placeholder) means a new head, as training starts it.
    torch.manual_seed(0)
    model = AutoModelForCTC.from_pretrained(source.weights_dir, dtype=torch.float32, local_files_only=True, use_safetensors=True,
                                            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, ignore_mismatched_sizes=True)
    if source.kind == "adapter":
        # Here, not at the top: peft takes about 2 s to import, and only an adapter needs it.
        from peft import PeftModel

        with peft_checkpointing_alias_quiet():
            model = PeftModel.from_pretrained(model, source.path).merge_and_unload()
    geometry = FrameGeometry.from_config(AutoConfig.from_pretrained(str(source.weights_dir)))
    return model.to(device=device, dtype=dtype).eval(), processor, geometry
