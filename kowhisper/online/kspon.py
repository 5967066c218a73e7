"""KsponSpeech as AI Hub ships it: its folders, its split lists, its headerless PCM, its transcription marks.

Standard library only (and the list of notations config checks against); reading the audio samples and building
rows belong elsewhere (common/audio.py, sources.py).

The release (AI Hub "한국어 음성", ~1,000 h of spontaneous dialogue, ETRI; Bang et al., Appl. Sci. 2020, 10, 6936):

    KsponSpeech_01 … KsponSpeech_05/KsponSpeech_0001/KsponSpeech_000001.pcm  (+ KsponSpeech_000001.txt beside it)
    KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm, KsponSpeech_eval/eval_other/KsponSpeech_E03001.pcm
    KsponSpeech_scripts/{train,dev,eval_clean,eval_other}.trn   lines "path :: text", paths relative to the root:
        KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: 아/ 몬 소리야, 그건 또. b/
        KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm :: 어/ 일단은 억지로 과장해서 …

Recipes do not agree on where these sit after unzipping (ESPnet expects scripts/, Lhotse the .trn files in the root
and eval_clean/ without KsponSpeech_eval/), so find_layout looks for the folders by name a few levels down.

Audio is headerless 16 kHz 16-bit little-endian mono PCM. The eval files have an odd byte count: one stray byte at
the end (reported in sooftware/kospeech#110 and #160, openspeech-team/openspeech#124 and #151, where numpy.memmap
fails with "Size of available data is not a multiple of the data-type size"; dropping the last byte, not the first,
gives the right samples). check_pcm_size therefore accepts an odd count for KsponSpeech_E*.pcm only, and a decoder
must read pcm_frame_count(size) samples; an odd train file is taken as cut short.

Transcripts (per-file .txt: CP949, some UTF-8; .trn: UTF-8 or CP949) follow ETRI's transcription rules:

    (70%)/(칠 십 퍼센트)   dual transcription, (spelling)/(pronunciation)
    b/ l/ o/ n/           breath, laughter, other speaker, noise;   u/  unintelligible speech
    아/ 음/                a filler word;   모+  a repeated word or fragment;   *  a word heard unclearly

clean_transcript removes them the way ESPnet's egs2/ksponspeech recipe does (local/get_transcriptions.py, written by
ETRI, the corpus authors, run in its default "df" disfluent mode): noise tags go; filler and repeated words stay as
spoken, without their "/" and "+"; "*" goes; the dual pair is resolved after allowing spaces around ")/(" and before
any tag is removed, since its slash is not a filler mark; punctuation left without a word goes (its stage 5).
KoSpeech (sooftware/ksponspeech, preprocess.py: bracket_filter, special_filter, sentence_filter with
mode='phonetic'|'spelling') and Lhotse/icefall (lhotse/recipes/ksponspeech.py: normalize) agree on these.
The notation chooses the side of the pair: "spelling" by default, like ESPnet (--notation-type char) and Lhotse,
because it is what Whisper writes ("70%", "1시") and kocer scores "70%" as "칠십 퍼센트"; "pronunciation" is
KoSpeech's default (mode='phonetic'), for comparing with numbers reported on that side.

Where this module differs, on purpose:
- u/ is deleted and CleanedTranscript.unintelligible is set, so the caller can drop the utterance (its label lacks
  words its audio has). ESPnet writes "[unk]", a token Whisper would learn to write; KoSpeech and Lhotse delete it
  silently.
- . , ? ! attached to a word are kept, because this project's labels keep punctuation (Whisper writes it; the
  metrics strip it, common/text.py). ESPnet then strips all punctuation (data_prep.sh); KoSpeech keeps . ? ! only.
- "%" is kept in both notations. KoSpeech keeps it in spelling mode, and in phonetic mode replaces a "%" found
  outside a dual pair with 퍼센트 or 프로 from a table of eight file ids: the reading is not in the text, so it is
  not guessed here.
- "#" and other symbols (~, ", [, …) are deleted and counted as "other symbol"; KoSpeech writes "#" as 샾. A symbol
  between two digits or two Latin letters is content and stays: 1/2, 3:30, A/S, R&D.
- Malformed parentheses (unclosed, unopened, a group without its pair) keep their text, lose the stray parenthesis
  and are counted as "malformed", so nothing is lost silently and the caller may drop them as ESPnet does (it skips
  such lines; KoSpeech's open/close toggle garbles the rest of the line). "(A)(B)", a pair missing its slash, is
  resolved as a pair and counted as malformed.
- A "+" or "/" glued to the next word ("모+몬", a missing space) splits the words; ESPnet drops "w1+w2" lines.
- A noise tag is a letter b l o n u that does not follow a Latin letter or digit: Lhotse's "[a-z]/" also eats the
  last letter of a Latin word before a filler slash.
"""

from __future__ import annotations

import codecs
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# The sides of a dual transcription a label can keep: config checks kspon_notation against the same list.
from kowhisper.config.groups import KSPON_NOTATIONS as NOTATIONS

SPLITS = ("train", "dev", "eval_clean", "eval_other")
EVAL_SETS = ("eval_clean", "eval_other")
PARTS = tuple(f"KsponSpeech_0{n}" for n in range(1, 6))
EVAL_FOLDER = "KsponSpeech_eval"
SCRIPTS_FOLDER = "KsponSpeech_scripts"
SAMPLE_RATE = 16000
SAMPLE_BYTES = 2  # 16-bit mono
# Every key CleanedTranscript.marks can hold.
MARKS = (
    "dual", "b/", "l/", "o/", "n/", "u/", "filler /", "repeat +", "unclear *", "stray punctuation", "other symbol",
    "malformed",
)

_SESSION_FOLDER = re.compile(r"KsponSpeech_\d{4}")
_EVAL_PCM = re.compile(r"KsponSpeech_E\d+\.pcm")
_SEARCH_DEPTH = 4  # how many folders below the root find_layout looks for the release's folders
_CHUNK = 1 << 20


class KsponError(ValueError):
    """KsponSpeech input that cannot be used; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Transcripts


@dataclass(frozen=True)
class CleanedTranscript:
    text: str  # NFC, single spaces, stripped; empty when only marks were left
    marks: Counter = field(default_factory=Counter)  # mark (a key of MARKS) -> times met in the kept text
    unintelligible: bool = False  # a u/ was present: the audio holds speech the text lacks


_NOISE_TAG = re.compile(r"(?<![A-Za-z0-9])([blonu])/")
_KEPT_PUNCTUATION = frozenset(".,?!")
_WHITESPACE = re.compile(r"\s+")


def clean_transcript(raw: str, notation: str = "spelling") -> CleanedTranscript:
    """The label of one KsponSpeech transcript: its marks removed, the dual transcriptions resolved to the spelling
    or the pronunciation side (see the module docstring for the rules and where they come from)."""
    if notation not in NOTATIONS:
        raise KsponError(f"notation must be one of {', '.join(NOTATIONS)}, not {notation!r}")
    marks: Counter = Counter()
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", raw))
    text = _resolve_dual(text, NOTATIONS.index(notation), marks)
    text = _NOISE_TAG.sub(lambda m: _count(marks, f"{m.group(1)}/", " "), text)
    text = _remove_word_marks(text, marks)
    text = _remove_other_symbols(text, marks)
    text = _remove_stray_punctuation(text, marks)
    text = unicodedata.normalize("NFC", _WHITESPACE.sub(" ", text).strip())
    return CleanedTranscript(text=text, marks=marks, unintelligible=marks["u/"] > 0)


def _count(marks: Counter, mark: str, replacement: str) -> str:
    marks[mark] += 1
    return replacement


def _closing(text: str, start: int) -> int | None:
    """Index of the ")" closing the "(" at start, nesting counted; None when it is never closed."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] == " ":
        i += 1
    return i


def _resolve_dual(text: str, side: int, marks: Counter) -> str:
    """Replace every (spelling)/(pronunciation) pair by one side, nested pairs inside the kept side too. A
    parenthesis that is not part of a pair is dropped and counted as malformed; the text around it stays."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ")":
            marks["malformed"] += 1
            i += 1
            continue
        if ch != "(":
            out.append(ch)
            i += 1
            continue
        first_end = _closing(text, i)
        if first_end is None:  # an unclosed "(": drop it, keep what follows
            marks["malformed"] += 1
            i += 1
            continue
        first = text[i + 1 : first_end]
        j = _skip_spaces(text, first_end + 1)
        slash = j < len(text) and text[j] == "/"
        k = _skip_spaces(text, j + 1) if slash else first_end + 1  # "(A)(B)": a pair missing its slash
        second_end = _closing(text, k) if k < len(text) and text[k] == "(" else None
        if second_end is not None:
            if not slash:
                marks["malformed"] += 1
            marks["dual"] += 1
            chosen = (first, text[k + 1 : second_end])[side]
            out.append(_resolve_dual(chosen, side, marks))
            i = second_end + 1
            continue
        # A group without its pair: keep its text. Its slash, if any, is the pair's, not a filler mark.
        marks["malformed"] += 1
        out.append(_resolve_dual(first, side, marks))
        if slash:
            out.append(" ")
            i = j + 1
        else:
            i = first_end + 1
    return "".join(out)


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _between_content(text: str, i: int) -> bool:
    """The character at i sits between two digits or two Latin letters (1/2, 3:30, A/S, R&D): content, not a mark."""
    if i == 0 or i + 1 >= len(text):
        return False
    before, after = text[i - 1], text[i + 1]
    return _is_ascii_alnum(before) and _is_ascii_alnum(after) and before.isdigit() == after.isdigit()


def _ends_word(text: str, i: int) -> bool:
    """Nothing of a word follows position i: the end, a space, or punctuation."""
    return i + 1 >= len(text) or text[i + 1] == " " or text[i + 1] in _KEPT_PUNCTUATION


def _remove_word_marks(text: str, marks: Counter) -> str:
    """The filler's "/", the repeated word's "+" and the unclear word's "*" go, the word stays. A mark glued to the
    next word (a missing space) becomes the space."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch in "/+" and _between_content(text, i):
            out.append(ch)
        elif ch == "/" or ch == "+":
            after_word = i > 0 and text[i - 1] != " "
            if ch == "/" and not after_word:
                marks["other symbol"] += 1  # a slash standing alone
            else:
                marks["filler /" if ch == "/" else "repeat +"] += 1
            out.append("" if _ends_word(text, i) or not after_word else " ")
        elif ch == "*":
            marks["unclear *"] += 1
        else:
            out.append(ch)
    return "".join(out)


def _remove_other_symbols(text: str, marks: Counter) -> str:
    """Keep letters, digits, spaces, . , ? ! and "%" after a number; a symbol between two digits or two Latin letters
    is content. Everything else is removed (a space where it stood between two words) and counted."""
    out: list[str] = []
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch == " " or category[0] in "LNM" or ch in _KEPT_PUNCTUATION:
            out.append(ch)
        elif ch == "%" and re.search(r"\d ?$", text[max(0, i - 2) : i]):
            out.append(ch)
        elif category[0] in "PS" and _between_content(text, i):
            out.append(ch)
        else:
            marks["other symbol"] += 1
            out.append(" " if _inside_word(text, i) else "")
    return "".join(out)


def _inside_word(text: str, i: int) -> bool:
    """Word characters on both sides of position i (그래~알았어, 남·북): removing it there must leave a space."""
    return 0 < i < len(text) - 1 and all(unicodedata.category(c)[0] in "LN" for c in (text[i - 1], text[i + 1]))


def _remove_stray_punctuation(text: str, marks: Counter) -> str:
    """Punctuation without a word before it (alone, or opening a word) is a slip of the transcriber or what is left
    of a removed mark: it goes, as in ESPnet's stage 5. Punctuation closing a word stays."""
    words = []
    for word in text.split():
        stripped = word.lstrip(".,?!")
        if stripped != word:
            marks["stray punctuation"] += 1
        if stripped:
            words.append(stripped)
    return " ".join(words)


# ---------------------------------------------------------------------------------------------------------------
# Text files


def read_transcript_bytes(data: bytes, where: str = "transcript") -> str:
    """The text of one transcript file's bytes: UTF-8 (a BOM is dropped) or else CP949, decided per file, since the
    release mixes them. CP949, not EUC-KR: it also holds the Hangul syllables EUC-KR lacks (똠, 햏). Raises
    KsponError naming `where` for bytes neither decodes, or that are not text."""
    encoding = _sniff_encoding(lambda: iter((data,)))
    if encoding is None:
        raise KsponError(f"{where} is neither UTF-8 nor CP949 text: is it a transcript? Copy it again from the release")
    text = data.decode(encoding)
    if "\x00" in text:
        raise KsponError(f"{where} holds NUL bytes, which no transcript has: is it UTF-16 or not a text file?")
    return text


def _sniff_encoding(chunks: Callable[[], Iterable[bytes]]) -> str | None:
    """utf-8-sig, utf-8 or cp949: the first that decodes every chunk (chunks() gives them anew for each try)."""
    head = next(iter(chunks()), b"")
    candidates = ("utf-8-sig",) if head.startswith(codecs.BOM_UTF8) else ("utf-8", "cp949")
    for encoding in candidates:
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            for chunk in chunks():
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        return encoding
    return None


def _file_chunks(path: Path) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    return chunks


def parse_trn_line(line: str, where: str) -> tuple[str, str]:
    """(pcm path, raw text) of one .trn line "path :: text". Raises KsponError naming `where` (file and line) for a
    line that is not of that form."""
    line = line.rstrip("\r\n").lstrip("\ufeff")
    path, sep, text = line.partition(" :: ")
    if not sep and line.rstrip().endswith(" ::"):  # "path ::" with its empty text and trailing space trimmed
        path, sep, text = line.rstrip()[:-3], " ::", ""
    path = path.strip()
    if not sep or not path:
        shown = line if len(line) <= 80 else line[:77] + "..."
        raise KsponError(f"{where}: expected 'path :: text', as in KsponSpeech_scripts/*.trn, got {shown!r}")
    return path, text.strip()


# ---------------------------------------------------------------------------------------------------------------
# Audio


def pcm_frame_count(num_bytes: int) -> int:
    """Whole 16-bit mono samples in a headerless PCM file of num_bytes; a stray last byte is not a sample."""
    if num_bytes < 0:
        raise ValueError(f"a byte count cannot be negative: {num_bytes}")
    return num_bytes // SAMPLE_BYTES


def check_pcm_size(path: Path, sample_rate: int = SAMPLE_RATE) -> float:
    """Duration in seconds of a KsponSpeech .pcm from its size alone. Raises KsponError for an empty file, and for an
    odd byte count except in the eval files (KsponSpeech_E*.pcm), which all carry one stray last byte."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise KsponError(f"cannot read {path}: {err.strerror or err}") from err
    if size == 0:
        raise KsponError(f"{path.name} is empty (0 bytes): cut short? Copy it again")
    if size % SAMPLE_BYTES and not _EVAL_PCM.fullmatch(path.name):
        raise KsponError(f"{path.name} has an odd number of bytes ({size}): cut short? Copy it again")
    return pcm_frame_count(size) / sample_rate


# ---------------------------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class KsponLayout:
    root: Path  # the folder searched; .trn paths that name none of the folders below resolve against it
    parts: dict[str, Path]  # "KsponSpeech_01" -> the folder holding KsponSpeech_0001, KsponSpeech_0002, ...
    eval_sets: dict[str, Path]  # "eval_clean" / "eval_other" -> the folder holding KsponSpeech_E*.pcm
    scripts: dict[str, Path]  # "train" / "dev" / "eval_clean" / "eval_other" -> its .trn file (may be empty)

    def describe(self) -> str:
        found = [*sorted(self.parts), *sorted(self.eval_sets)]
        scripts = ", ".join(f"{s}.trn" for s in SPLITS if s in self.scripts) or "no split lists (.trn)"
        return f"KsponSpeech at {self.root}: {', '.join(found)}; {scripts}"


def find_layout(root: Path) -> KsponLayout:
    """Where the release's folders are under root (root itself, or up to a few folders down: unzipping nests them
    differently): KsponSpeech_01 … _05, eval_clean and eval_other (inside KsponSpeech_eval or not), and the .trn
    split lists (in KsponSpeech_scripts, scripts/ or anywhere). Raises KsponError when none is found, or one is
    found twice."""
    root = Path(root)
    if not root.is_dir():
        raise KsponError(f"{root} is not a folder: point at the folder holding KsponSpeech_01 … KsponSpeech_05")
    tables: dict[str, dict[str, Path]] = {"parts": {}, "eval_sets": {}, "scripts": {}}
    archives: list[str] = []

    def record(table: str, key: str, path: Path) -> None:
        known = tables[table].get(key)
        if known is not None and known != path:
            raise KsponError(f"{key} is under {root} twice, at {known} and at {path}: point at the folder holding one copy")
        tables[table][key] = path

    def classify(folder: Path) -> bool:
        """Record folder if it is one of the release's audio folders; True when it need not be searched further."""
        if folder.name in PARTS and _holds_sessions(folder):
            record("parts", folder.name, folder)
            return True
        if folder.name in EVAL_SETS:
            record("eval_sets", folder.name, folder)
            return True
        return False

    pending = [] if classify(root) else [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        for entry in _listing(folder):
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir():
                if not classify(path) and depth < _SEARCH_DEPTH:
                    pending.append((path, depth + 1))
            elif entry.name.endswith(".trn") and entry.name[:-4] in SPLITS:
                record("scripts", entry.name[:-4], path)
            elif entry.name.startswith("KsponSpeech") and entry.name.endswith(".zip"):
                archives.append(entry.name)
    if not tables["parts"] and not tables["eval_sets"]:
        hint = f" Found {', '.join(sorted(archives)[:3])}: unzip them first." if archives else ""
        raise KsponError(
            f"no KsponSpeech audio under {root}: expected KsponSpeech_01 … KsponSpeech_05 and KsponSpeech_eval "
            f"(eval_clean, eval_other) as AI Hub ships them, with KsponSpeech_scripts beside them.{hint}"
        )
    return KsponLayout(root=root, **tables)


def _listing(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as err:
        raise KsponError(f"cannot list {folder}: {err.strerror or err}") from err


def _holds_sessions(folder: Path) -> bool:
    """A KsponSpeech_0N folder that holds the KsponSpeech_NNNN session folders (not one that wraps another copy)."""
    return any(e.is_dir() and _SESSION_FOLDER.fullmatch(e.name) for e in _listing(folder))


def iter_split(layout: KsponLayout, split: str) -> Iterator[tuple[str, Path, str]]:
    """(id, pcm path, raw text) for every line of the split's .trn, in its order; the id is the file's stem
    (KsponSpeech_000001, KsponSpeech_E00001). The .trn's paths are mapped onto the folders find_layout found;
    whether each file exists is left to the reader. Raises KsponError for an unknown split, a missing .trn, a
    malformed line or a path into a folder that is not there."""
    if split not in SPLITS:
        raise KsponError(f"KsponSpeech has the splits {', '.join(SPLITS)}, not {split!r}")
    trn = layout.scripts.get(split)
    if trn is None:
        raise KsponError(
            f"no {split}.trn under {layout.root}: the split lists come in AI Hub's KsponSpeech_scripts; "
            "put that folder beside the audio folders, or read the folders without split lists (iter_folder)"
        )
    encoding = _sniff_encoding(_file_chunks(trn))
    if encoding is None:
        raise KsponError(f"{trn} is neither UTF-8 nor CP949 text: copy it again from KsponSpeech_scripts")
    with open(trn, encoding=encoding, newline=None) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{trn}:{number}"
            relative, raw = parse_trn_line(line, where)
            pcm = _resolve(layout, relative, where)
            yield pcm.stem, pcm, raw


def _resolve(layout: KsponLayout, relative: str, where: str) -> Path:
    parts = [p for p in PurePosixPath(relative.replace("\\", "/")).parts if p != "."]
    if not parts or relative.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise KsponError(f"{where}: {relative!r} is not a path inside the release")
    head = parts[0]
    if head == EVAL_FOLDER and len(parts) > 1:
        head, parts = parts[1], parts[1:]
    if head in PARTS or head in EVAL_SETS:
        folder = layout.parts.get(head) if head in PARTS else layout.eval_sets.get(head)
        if folder is None:
            raise KsponError(f"{where}: {relative} is in {head}, but no {head} folder was found under {layout.root}")
        return folder.joinpath(*parts[1:])
    return layout.root.joinpath(*parts)


@dataclass(frozen=True)
class Unreadable:
    """What iter_folder yields in place of a transcript whose bytes are neither UTF-8 nor CP949: why, for the caller
    to drop that utterance by reason."""

    reason: str


def iter_folder(layout: KsponLayout, folders: Iterable[str] | None = None) -> Iterator[tuple[str, Path, str | Unreadable]]:
    """(id, pcm path, raw text) for every .pcm in the audio folders, with the .txt beside it (UTF-8 or CP949, per
    file; an undecodable one comes as Unreadable): the way to read the release without its split lists. folders
    picks some by name (KsponSpeech_01, eval_clean, ...; default: all found), in that order; files come sorted by
    name. Raises KsponError for a .pcm without its .txt, or a folder name that was not found."""
    found = {**layout.parts, **layout.eval_sets}
    if folders is None:
        names = sorted(layout.parts) + [s for s in EVAL_SETS if s in layout.eval_sets]
    else:
        names = list(folders)
    for name in names:
        if name not in found:
            raise KsponError(f"no {name} folder under {layout.root}; found {', '.join(sorted(found))}")
    for name in names:
        yield from _iter_pcm_folder(found[name])


def _iter_pcm_folder(folder: Path) -> Iterator[tuple[str, Path, str | Unreadable]]:
    entries = _listing(folder)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir() and not entry.name.startswith("."):
            yield from _iter_pcm_folder(path)
        elif entry.name.endswith(".pcm"):
            txt = path.with_suffix(".txt")
            try:
                data = txt.read_bytes()
            except FileNotFoundError:
                raise KsponError(
                    f"{path.name} has no {txt.name} beside it in {folder}: copy it again, or read the split lists "
                    "(KsponSpeech_scripts/*.trn) instead"
                ) from None
            except OSError as err:
                raise KsponError(f"cannot read {txt}: {err.strerror or err}") from err
            try:
                yield path.stem, path, read_transcript_bytes(data, where=str(txt)).strip()
            except KsponError as error:  # one damaged transcript costs its utterance, not the corpus
                yield path.stem, path, Unreadable(str(error))
