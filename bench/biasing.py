"""Contextual biasing on real speech: do hotwords bring back the words a model gets wrong, at no cost elsewhere?

On the test split of the real-speech set (bench/quality.py's workspace; `../shared/data/ko-real-speech`, read from
there), as a team would use `hotwords=`:

1. Target words: words (space-delimited, punctuation stripped, two syllables or more) of the test references that
   zero-shot whisper-base gets wrong on that clip (the word is not in its transcript, spaces ignored) and that occur
   in at most MAX_TARGET_CLIPS references: names, rare nouns, loanwords, rather than common inflections. The
   longest come first (ties by text), as many as fit with the distractors in Whisper's 223 prompt tokens.
2. Distractors: as many words from ../shared/data/ko_sentences.tsv that occur in no test reference (seed 0).
3. Every clip is decoded with all of them as hotwords (shuffled, seed 0), and without, by:
   - this toolkit's engine (CTranslate2 int8, as inference.py runs on a CPU), for the base and a fine-tuned adapter
     (bench/quality.py's default recipe run on the clean set, `default-clean`, if it is there);
   - faster-whisper's own `hotwords=` on the same CTranslate2 export of the base (greedy, no timestamps, no VAD, no
     conditioning on earlier text: the same decode otherwise).

Reported per system: recall of the target words on the clips that hold them, distractors written (false alarms), CER
on all clips, on the clips with a target word and on the clips without any (which must not get worse beyond the
paired interval), each with the paired-bootstrap interval of the difference that hotwords make.

    python -m bench.biasing
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import time
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()

from bench.quality import OUT_DIR  # noqa: E402 (after force_offline)
from tests.sample_files import REAL_SPEECH_KO, clip_path  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = OUT_DIR / "workspace"
ADAPTER_RUN = "default-clean"
SENTENCES = PROJECT_ROOT.parent / "shared" / "data" / "ko_sentences.tsv"
CACHE = OUT_DIR / "biasing"
MAX_TARGET_CLIPS = 3
MIN_SYLLABLES = 2
WORD = re.compile(r"[가-힣A-Za-z0-9]+")
RATES = ("cer", "kocer_cer")
# faster-whisper decodes the base only: the comparison is of the hotword mechanism, the same for any weights, and its
# one-clip-at-a-time decode is the slower of the two here.
FASTER_WHISPER_MODELS = ("base",)


def words_of(text: str) -> list[str]:
    return [word for word in WORD.findall(text) if sum("가" <= char <= "힣" for char in word) >= MIN_SYLLABLES]


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def choose_words(references: list[str], zero_shot: list[str], tokenizer, budget: int) -> tuple[list[str], list[str]]:
    """(target words, distractors), as many of each as fit in `budget` prompt tokens together (module docstring)."""
    clips_with: dict[str, int] = {}
    for reference in references:
        for word in set(words_of(reference)):
            clips_with[word] = clips_with.get(word, 0) + 1
    missed = {word for reference, hypothesis in zip(references, zero_shot) for word in words_of(reference)
              if word not in squeeze(hypothesis) and clips_with[word] <= MAX_TARGET_CLIPS}
    targets = sorted(missed, key=lambda word: (-len(word), word))
    with open(SENTENCES, encoding="utf-8", newline="") as handle:
        pool = sorted({word for row in csv.DictReader(handle, delimiter="\t") for word in words_of(row["sentence"])
                       if len(word) >= 3 and word not in clips_with})
    distractors = random.Random(0).sample(pool, len(pool))
    count = len(targets)
    while count and len(tokenizer.encode(" " + " ".join(targets[:count] + distractors[:count]), add_special_tokens=False)) > budget:
        count -= 1
    return targets[:count], distractors[:count]


def hotword_list(targets: list[str], distractors: list[str]) -> list[str]:
    words = targets + distractors
    random.Random(0).shuffle(words)
    return words


def decode_ours(source, dataset, hotwords: list[str]) -> tuple[list[str], float]:
    from kowhisper.config import load_config
    from kowhisper.evaluate.split import evaluate_source

    config = load_config([f"workspace={WORKSPACE}", "backend=ct2", f"hotwords=[{','.join(hotwords)}]"])
    result = evaluate_source(source, dataset, config)
    return [row["hypothesis"] for row in result.rows], result.seconds


def decode_faster_whisper(ct2_dir: Path, clips: list[Path], hotwords: list[str]) -> tuple[list[str], float]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=2)
    started, texts = time.perf_counter(), []
    for clip in clips:
        segments, _ = model.transcribe(str(clip), language="ko", beam_size=1, without_timestamps=True, vad_filter=False,
                                       condition_on_previous_text=False, hotwords=" ".join(hotwords) or None)
        texts.append(" ".join(segment.text.strip() for segment in segments))
    return texts, time.perf_counter() - started


def cached(name: str, decode, *arguments) -> list[str]:
    """decode(*arguments)'s hypotheses, kept in CACHE under `name`."""
    path = CACHE / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())["hypotheses"]
    hypotheses, seconds = decode(*arguments)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hypotheses": hypotheses, "seconds": seconds}, ensure_ascii=False))
    return hypotheses


def subset_rates(counts: list[dict], rows: list[int]) -> dict:
    picked = [counts[i] for i in rows if counts[i] is not None]
    return {rate: sum(c[f"{rate}_errors"] for c in picked) / max(sum(c[f"{rate}_chars"] for c in picked), 1) for rate in RATES}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    from kowhisper.common.bootstrap import BootstrapSettings, compare_with_reference
    from kowhisper.common.cpu import cpu_model_name
    from kowhisper.common.text import utterance_counts
    from kowhisper.evaluate.split import load_eval_split
    from kowhisper.families.base import resolve_model
    from kowhisper.families.whisper.ct2_export import ensure_ct2_export
    from kowhisper.families.whisper.engines import MAX_PROMPT_TOKENS
    from kowhisper.families.whisper.loading import load_processor

    dataset, _ = load_eval_split(WORKSPACE, "test", None)
    references = list(dataset["text"])
    clips = [clip_path(REAL_SPEECH_KO, row_id) for row_id in dataset["id"]]
    base = resolve_model(WORKSPACE, "base")
    zero_shot = cached("ours-base-none", decode_ours, base, dataset, [])
    tokenizer = load_processor(WORKSPACE / "model").tokenizer
    targets, distractors = choose_words(references, zero_shot, tokenizer, MAX_PROMPT_TOKENS)
    hotwords = hotword_list(targets, distractors)
    with_target = [i for i, reference in enumerate(references) if any(word in words_of(reference) for word in targets)]
    without = [i for i in range(len(references)) if i not in set(with_target)]
    print(f"{len(targets)} target words (in {len(with_target)} of {len(references)} test clips) and {len(distractors)} distractors")

    models = {"base": base}
    if (WORKSPACE / "runs" / ADAPTER_RUN).is_dir():
        models["fine-tuned"] = resolve_model(WORKSPACE, ADAPTER_RUN)
    systems = {}
    for label, source in models.items():
        ct2_dir = ensure_ct2_export(source, "int8")
        key = label.replace(" ", "-")
        systems[f"toolkit, {label}"] = (cached(f"ours-{key}-none", decode_ours, source, dataset, []),
                                        cached(f"ours-{key}-hotwords", decode_ours, source, dataset, hotwords))
        if label in FASTER_WHISPER_MODELS:
            systems[f"faster-whisper, {label}"] = (cached(f"fw-{key}-none", decode_faster_whisper, ct2_dir, clips, []),
                                                   cached(f"fw-{key}-hotwords", decode_faster_whisper, ct2_dir, clips, hotwords))

    settings = BootstrapSettings()
    groups = list(dataset["source"])
    lines = [f"CPU: {cpu_model_name()}. {len(references)} test clips; {len(targets)} target words in {len(with_target)} clips, "
             f"{len(distractors)} distractors, {len(tokenizer.encode(' ' + ' '.join(hotwords), add_special_tokens=False))} prompt tokens.",
             "", "| system | hotwords | target recall | distractors written | CER all | CER clips with a target | "
             "CER clips without | kocer all |", "|---|---|---|---|---|---|---|---|"]
    intervals = []
    for name, (plain, biased) in systems.items():
        counts = {}
        for tag, hypotheses in (("none", plain), ("hotwords", biased)):
            counts[tag] = [utterance_counts(reference, hypothesis) for reference, hypothesis in zip(references, hypotheses)]
            hits = sum(word in squeeze(hypotheses[i]) for i in with_target for word in set(words_of(references[i])) if word in targets)
            occurrences = sum(word in targets for i in with_target for word in set(words_of(references[i])))
            false_alarms = sum(word in squeeze(hypotheses[i]) for i in range(len(references)) for word in distractors)
            everything, targeted, rest = (subset_rates(counts[tag], rows) for rows in (range(len(references)), with_target, without))
            lines.append(f"| {name} | {tag} | {hits}/{occurrences} ({100 * hits / max(occurrences, 1):.0f}%) | {false_alarms} | "
                         f"{100 * everything['cer']:.2f}% | {100 * targeted['cer']:.2f}% | {100 * rest['cer']:.2f}% | "
                         f"{100 * everything['kocer_cer']:.2f}% |")
        for part, rows in (("all clips", list(range(len(references)))), ("clips with a target", with_target), ("clips without", without)):
            difference = compare_with_reference([counts["none"][i] for i in rows], {"hotwords": [counts["hotwords"][i] for i in rows]},
                                                [groups[i] for i in rows], RATES, settings)["hotwords"]
            intervals.append(f"- {name}, {part}: CER {difference['cer'].describe()}; kocer {difference['kocer_cer'].describe()}")
    print("\n".join(lines + ["", "Hotwords minus none, paired bootstrap (95%, 1000 resamples, seed 0):", *intervals]))
    print("\nTarget words:", " ".join(targets))
    print("Distractors:", " ".join(distractors))


if __name__ == "__main__":
    main()
