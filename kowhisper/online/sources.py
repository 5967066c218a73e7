"""Where the speech comes from: every source becomes the rows of the three workspace splits.

A split's rows are a `datasets.Dataset` with the columns id, text and audio. Audio is a file path (Common
Voice, manifests) or datasets' undecoded audio `{"bytes", "path"}` (hf). Rows stay in Arrow rather than in
Python lists so that a 50-hour parquet dataset can be split and sliced without holding its audio in memory;
TSV and manifest rows are written to Arrow files in the cache folder (config.cache_dir) as they are read, so a
620k-row KsponSpeech list is not held in memory either.

Downloads, extracted tarballs and those row files live in the cache folder, never in the workspace: the workspace
holds only what is copied to the offline box.

Input that cannot be read (a tarball cut short by an interrupted download, a damaged parquet file, a TSV or
manifest that is not UTF-8 text or not well-formed, a path that climbs out of its folder) stops with a
DataError naming the file and what to do, never a traceback.

    cv        a Common Voice release directory or tarball (cv-corpus-*/<lang>/{train,dev,test,validated}.tsv)
    mdc       the same release, downloaded with the Mozilla Data Collective client
    hf        a datasets dataset: a Hub id, or a local directory of parquet/arrow files or of save_to_disk
    manifest  a CSV/TSV/JSONL of audio path and transcript, with an optional split column
    kspon     KsponSpeech as AI Hub ships it: headerless .pcm, CP949 or UTF-8 transcripts with the corpus's marks, and
              the official split lists (KsponSpeech_scripts/*.trn) where present (kowhisper.online.kspon)
    segments  long recordings with the times and text of each utterance: a CSV/TSV/JSONL of audio,start,end,text, or a
              folder of one JSON file per recording holding its list of segments; a segment's row names its recording
              and its times, and preparation decodes only that stretch

A loader may judge a row unusable before it is decoded (a KsponSpeech utterance marked unintelligible): it names the
reason in the row's `drop` column, and preparation drops the row by that reason like any other, listed and counted.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import json
import lzma
import os
import posixpath
import shutil
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Audio, Dataset, DatasetDict, Features, Value, concatenate_datasets, load_dataset, load_from_disk
from datasets.arrow_writer import ArrowWriter

from kowhisper.common.files import PARTIAL_SUFFIX, partial_path
from kowhisper.common.workspace import SPLITS
from kowhisper.config import Config, DatasetSource, OnlineGroup
from kowhisper.online.kspon import EVAL_SETS as KSPON_EVAL_SETS
from kowhisper.online.kspon import MARKS as KSPON_MARKS
from kowhisper.online.kspon import SPLITS as KSPON_SPLITS
from kowhisper.online.kspon import KsponError, KsponLayout, Unreadable, clean_transcript, find_layout, iter_folder, iter_split

_TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CV_SPLIT_FILES = ("train", "dev", "test")
ROW_FEATURES = Features({"id": Value("string"), "text": Value("string"), "audio": Value("string"), "drop": Value("string"),
                         "start": Value("float64"), "end": Value("float64")})  # start, end: a segment's seconds; null: all
# The files a manifest or a segments table may be (_manifest_records reads each kind).
TABLE_SUFFIXES = (".jsonl", ".tsv", ".tab", ".csv")
# What a loader's drop reasons mean, for the drop records.
DROP_DETAILS = {"unintelligible": "the transcript marks unintelligible speech (u/), so the label lacks words the audio has; "
                                  "kspon_unintelligible=keep keeps such rows",
                "unreadable_transcript": "the transcript file beside the audio is neither UTF-8 nor CP949 text: copy it again",
                "overlap": "the segment overlaps another of the same recording, so its audio holds speech its text lacks",
                "bad_times": "the segment's start is negative or not before its end"}
# What a damaged or cut-short tarball raises besides tarfile's own ReadError: EOFError from the gzip, bzip2
# and xz decoders at a truncation, zlib.error and LZMAError for a damaged stream, BadGzipFile for a bad header.
_DAMAGED_ARCHIVE_ERRORS = (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


class DataError(RuntimeError):
    """Source data that cannot be used; the message names what is wrong and what to do."""


@dataclass
class SourceRows:
    splits: dict[str, Dataset]  # workspace split name -> rows (id, text, audio)
    description: str  # what the rows came from, for messages and the report
    # The content of audio not named by a file path (hf bytes), as datasets' fingerprints of the source splits.
    identity: str = ""
    notes: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # what the loader counted while reading (KsponSpeech's marks), for report.json


@dataclass
class _Loaded:
    splits: dict[str, Dataset]  # source split name -> rows
    description: str
    has_splits: bool = True  # False: one pool of rows that must be split by ratio
    identity: str = ""
    counts: dict = field(default_factory=dict)
    grouped: bool = False  # True: rows of one recording (same audio) stay in one split when split by ratio


def check_source(source) -> None:
    """What can be told about one config.DatasetSource's input without reading all of it: its path exists and is of a
    kind its data_source takes, a tarball opens as one, the files of a local dataset are whole, an API key is set.
    Raises DataError. load_source checks the same; the online setup calls this first for every source, so a wrong
    path stops it before anything is downloaded or converted."""
    checks = {"cv": _check_cv_input, "mdc": _check_mdc_key, "hf": _check_hf_input, "manifest": _check_manifest_input,
              "kspon": _check_kspon_input, "segments": _check_segments_input}
    checks[source.data_source](source)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name longer than the file system allows, say: no such file either
        return False


def rows_dir(config: OnlineGroup) -> Path:
    """The row files of the sources being prepared for config.workspace: scratch, one folder per workspace, so two
    workspaces set up from one cache folder do not meet."""
    key = hashlib.sha256(str(config.workspace_dir).encode()).hexdigest()[:16]
    return config.cache_path / "rows" / key


def load_source(source: DatasetSource, config: Config) -> SourceRows:
    """The rows of one config.DatasetSource. The config gives the cache folder (config.cache_path) for downloads,
    extractions and row files, and `language_abbr`, which picks the language folder of a Common Voice release."""
    cache = config.cache_path
    if cache == config.workspace_dir or config.workspace_dir in cache.parents:
        raise DataError(f"cache_dir {cache} lies inside the workspace {config.workspace_dir}, which must hold only what is "
                        "copied to the offline box; choose a cache_dir outside it")
    loaders = {"cv": _load_cv, "mdc": _load_mdc, "hf": _load_hf, "manifest": _load_manifest, "kspon": _load_kspon,
               "segments": _load_segments}
    loaded = loaders[source.data_source](source, _SourceContext(cache, rows_dir(config), config.language_abbr))
    splits, notes = assign_splits(loaded, source)
    splits = {name: cap_rows(rows, source.max_samples, source.split_seed) for name, rows in splits.items()}
    return SourceRows(splits=splits, description=loaded.description, identity=loaded.identity, notes=notes, counts=loaded.counts)


@dataclass
class _SourceContext:
    cache: Path  # config.cache_path
    rows: Path  # rows_dir(config)
    language_abbr: str


# ---- splitting -----------------------------------------------------------------------------------------------


def assign_splits(loaded: _Loaded, source) -> tuple[dict[str, Dataset], list[str]]:
    """Map source splits onto train/dev/test. With resplit, or a source without splits, every row is pooled
    and split by ratio; a configured split the source lacks (or an empty name) is carved from train."""
    ratios = dict(zip(SPLITS, source.split_ratios))
    if source.resplit or not loaded.has_splits:
        pool = _concatenate(list(loaded.splits.values()))
        why = "resplit=true" if source.resplit else "the source has no splits"
        note = f"{why}: re-split {len(pool)} rows by split_ratios {source.split_ratios} (seed {source.split_seed})"
        return split_by_ratio(pool, ratios, source.split_seed, _groups(pool, loaded)), [note]

    names = {"train": source.train_split, "dev": source.dev_split, "test": source.test_split}
    available = ", ".join(sorted(loaded.splits)) or "none"
    if not names["train"] and source.weight == 0 and names["test"] in loaded.splits:
        # A held-out test set alone (KsponSpeech's eval_other as <name>-other): nothing to train on or carve from.
        test = loaded.splits[names["test"]]
        return {"train": test.select([]), "dev": test.select([]), "test": test}, []
    if names["train"] not in loaded.splits:
        raise DataError(
            f"{loaded.description} has no split {names['train']!r} (train_split); it has: {available}. "
            "Set train_split to one of them, or resplit=true to pool every row and split by split_ratios."
        )
    assigned = {split: loaded.splits[name] for split, name in names.items() if name and name in loaded.splits}
    missing = [split for split in SPLITS if split not in assigned]
    if not missing:
        return assigned, []
    notes = []
    for split in missing:
        reason = f"the source has no split {names[split]!r} (it has: {available})" if names[split] else f"{split}_split is empty"
        notes.append(f"{reason}: carving {split} from train by split_ratios (seed {source.split_seed})")
    carved = split_by_ratio(assigned["train"], {split: ratios[split] for split in ["train", *missing]}, source.split_seed,
                            _groups(assigned["train"], loaded))
    return {**assigned, **carved}, notes


def _groups(rows: Dataset, loaded: _Loaded) -> list[str] | None:
    return list(rows["audio"]) if loaded.grouped else None


def split_by_ratio(rows: Dataset, ratios: dict[str, float], seed: int, groups: list[str] | None = None) -> dict[str, Dataset]:
    """Shuffle with `seed` and cut into consecutive parts sized by `ratios` (which need not sum to 1). With `groups` (a
    key per row), whole groups are shuffled and a group never straddles two parts: the segments of one recording stay
    together, so no test segment shares a recording (and its speaker and room) with a training one."""
    if groups is not None:
        members: dict[str, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        shuffled = [members[key] for key in np.random.default_rng(seed).permutation(list(members))]
        order = np.array([index for group in shuffled for index in group], dtype=np.int64)
        # Cut only between groups: each bound moves to the group boundary nearest to it.
        ends = np.concatenate([[0], np.cumsum([len(group) for group in shuffled])])
        weights = np.array(list(ratios.values()), dtype=float)
        targets = np.cumsum(weights) / weights.sum() * len(rows)
        bounds = [int(ends[np.abs(ends - target).argmin()]) for target in targets[:-1]] + [len(rows)]
        starts = [0, *bounds[:-1]]
        return {name: rows.select(order[start:end]) for name, start, end in zip(ratios, starts, bounds)}
    order = np.random.default_rng(seed).permutation(len(rows))
    weights = np.array(list(ratios.values()), dtype=float)
    bounds = np.floor(np.cumsum(weights) / weights.sum() * len(rows) + 1e-9).astype(int)
    starts = np.concatenate([[0], bounds[:-1]])
    return {name: rows.select(order[start:end]) for name, start, end in zip(ratios, starts, bounds)}


def cap_rows(rows: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """The first `max_samples` rows of a seeded shuffle, so a cap is a reproducible random sample."""
    if max_samples is None or len(rows) <= max_samples:
        return rows
    return rows.select(np.random.default_rng(seed).permutation(len(rows))[:max_samples])


def _concatenate(parts: list[Dataset]) -> Dataset:
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


class _RowFiles:
    """Rows of a source, one Arrow file per source split, written as they are read and memory-mapped back.

    Each file is written under a temporary name and renamed over the old one, so a dataset still mapping the old
    file (an earlier load in the same process) keeps reading it intact."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.writers: dict[str, ArrowWriter] = {}

    def open(self, split: str) -> ArrowWriter:
        if split not in self.writers:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writers[split] = ArrowWriter(features=ROW_FEATURES, path=str(self._path(split, PARTIAL_SUFFIX)))
        return self.writers[split]

    def add(self, split: str, row_id: str, text: str, audio: str, drop: str = "", start: float | None = None,
            end: float | None = None) -> None:
        self.open(split).write({"id": row_id, "text": text, "audio": audio, "drop": drop, "start": start, "end": end})

    def finish(self) -> dict[str, Dataset]:
        splits = {}
        for split, writer in self.writers.items():
            writer.finalize()
            os.replace(self._path(split, PARTIAL_SUFFIX), self._path(split))
            splits[split] = Dataset.from_file(str(self._path(split)))
        for stale in set(self.folder.glob("*.arrow")) - {self._path(split) for split in self.writers}:
            stale.unlink()
        return splits

    def _path(self, split: str, suffix: str = "") -> Path:
        # Split values come from a user's manifest; as hex they cannot name a path outside the folder.
        return self.folder / (f"{split.encode('utf-8').hex() or 'empty'}.arrow" + suffix)


def _row_files(source, context: _SourceContext) -> _RowFiles:
    return _RowFiles(context.rows / source.name)


def _inside(folder: Path, relative: str, where: str) -> Path:
    """`folder`/`relative`, refused when `relative` climbs out of `folder` ('..' or an absolute path). Checked on
    the names, as for tarball members: a symlink the user put inside the folder may point anywhere."""
    if PurePosixPath(relative).is_absolute() or posixpath.normpath(relative).split("/")[0] == "..":
        raise DataError(
            f"{where}: the audio path {relative!r} leads outside {folder}; a relative path must stay inside its "
            "folder (give an absolute path if that file is really meant)"
        )
    return folder / relative


def _table_records(path: Path, delimiter: str, quoting: int, kind: str, required: tuple[str, ...] = ()):
    """(line number, record) of a CSV or TSV with a header; every way the file can be unreadable is a DataError."""
    reader = None
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter, quoting=quoting)
            missing = [column for column in required if column not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path} lacks the {kind} column(s) {', '.join(missing)}")
            for record in reader:
                yield reader.line_num, record
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}): it is damaged or not a {kind}; "
                        "download or export it again") from None
    except csv.Error as error:
        # line_num counts the lines of the records read whole; the bad one starts on the next.
        line = f" at line {reader.line_num + 1}" if reader is not None else ""
        raise DataError(f"{path} is not a well-formed {kind}{line} ({error}); fix it or export it again") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None


# ---- cv: Common Voice release --------------------------------------------------------------------------------


def _check_cv_input(source) -> Path:
    path = Path(source.data_path).expanduser()
    if not _exists(path):
        raise DataError(f"Common Voice release not found: {path} (data_path). Give the release directory or its .tar.gz.")
    if path.is_file():
        if not path.name.endswith(_TARBALL_SUFFIXES):
            raise DataError(f"{path} (data_path) is a file but not a .tar.gz/.tgz/.tar Common Voice release")
        check_tarball_opens(path)
    return path


def _load_cv(source, context: _SourceContext) -> _Loaded:
    path = _check_cv_input(source)
    if path.is_file():
        return _load_cv_release(extract_tarball(path, context.cache / "cv"), source, context, f"tarball {path}")
    return _load_cv_release(path, source, context, str(path.resolve()))


def find_cv_release(root: Path, language_abbr: str) -> Path:
    """The folder holding the TSVs: root itself, root/<lang>, or root/cv-corpus-*/<lang>."""
    candidates = [root, root / language_abbr, *sorted(root.glob(f"*/{language_abbr}"))]
    for candidate in candidates:
        if any((candidate / f"{name}.tsv").is_file() for name in (*_CV_SPLIT_FILES, "validated")):
            return candidate
    raise DataError(
        f"no Common Voice '{language_abbr}' release in {root}: expected train.tsv/dev.tsv/test.tsv/validated.tsv "
        f"in it, in {language_abbr}/ or in cv-corpus-*/{language_abbr}/ (language_abbr={language_abbr!r})"
    )


def _load_cv_release(root: Path, source, context: _SourceContext, origin: str) -> _Loaded:
    release = find_cv_release(root, context.language_abbr)
    description = f"Common Voice release {origin}" + (f" ({release.relative_to(root)})" if release != root else "")
    if source.resplit and (release / "validated.tsv").is_file():
        # validated.tsv holds every validated clip; train/dev/test keep one clip per sentence and are much smaller.
        names = ["validated"]
    else:
        wanted = [source.train_split, source.dev_split, source.test_split]
        names = [name for name in dict.fromkeys(wanted) if name and (release / f"{name}.tsv").is_file()]
    rows = _row_files(source, context)
    for name in names:
        _read_cv_tsv(release, name, rows)
    return _Loaded(rows.finish(), description)


def _read_cv_tsv(release: Path, name: str, rows: _RowFiles) -> None:
    tsv = release / f"{name}.tsv"
    clips = release / "clips"
    rows.open(name)  # a TSV with a header alone is an empty split, not a missing one
    # QUOTE_NONE: Common Voice sentences contain unbalanced quotes, which the default dialect would swallow.
    for line, record in _table_records(tsv, "\t", csv.QUOTE_NONE, "Common Voice TSV", required=("path", "sentence")):
        # Every row of a release has every column; fewer means the file was cut short in the middle of a line.
        if None in record.values():
            raise DataError(f"{tsv} line {line} has fewer columns than its header: the file is cut short or damaged; "
                            "download the release again")
        audio = _inside(clips, record["path"], f"{tsv} line {line}")
        rows.add(name, PurePosixPath(record["path"]).stem, record["sentence"], str(audio))


def check_tarball_opens(tarball: Path) -> None:
    """The quick check: the archive opens and its first member header reads. It catches a file that is not a tarball
    (or not gzip, bzip2 or xz) at once; a tarball cut short further on is found when it is extracted, which the
    online setup also does before the model step."""
    try:
        with tarfile.open(tarball, "r:*") as archive:
            if archive.next() is None:
                raise DataError(f"{tarball} (data_path) is an empty tarball: download the release again")
    except _DAMAGED_ARCHIVE_ERRORS as error:
        first_line = (str(error).splitlines() or [""])[0].rstrip(":")  # tarfile lists every compression it tried
        raise DataError(f"{tarball} is damaged or incomplete, or not a tarball ({type(error).__name__}: {first_line}): "
                        "download it again") from None
    except OSError as error:
        raise DataError(f"cannot read {tarball}: {error.strerror or error}") from None


def extract_tarball(tarball: Path, cache: Path) -> Path:
    """Extract once into `cache`, keyed by the tarball's name and size, so other workspaces made from the same tarball
    reuse it. The extraction goes into a temporary folder renamed into place when complete; one a killed process left
    is removed and redone."""
    stat = tarball.stat()
    target = cache / f"{tarball.name}-{stat.st_size}"
    if target.is_dir():  # only ever renamed into place whole
        return target
    staging = partial_path(target)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    print(f"extracting {tarball} into {target}")
    try:
        with tarfile.open(tarball, "r:*") as archive:
            archive.extractall(staging, filter=_safe_member)
    except tarfile.FilterError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"cannot extract {tarball}: {error}") from None
    except (*_DAMAGED_ARCHIVE_ERRORS, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and error.errno is not None:  # the disk, not the archive: full, read-only, ...
            raise DataError(f"cannot extract {tarball} into {target}: {error.strerror}") from None
        raise DataError(f"{tarball} is damaged or incomplete ({type(error).__name__}: {error}), as an interrupted "
                        "download leaves it: download it again") from None
    staging.rename(target)
    return target


def _safe_member(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    # data_filter alone would quietly strip a leading '/'; a release never has one, so such a tarball is refused.
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise tarfile.FilterError(f"refusing unsafe member {member.name!r} (absolute path or '..')")
    return tarfile.data_filter(member, destination)


# ---- mdc: Mozilla Data Collective ----------------------------------------------------------------------------

MDC_KEY_VARIABLE = "MDC_API_KEY"


def _check_mdc_key(source) -> None:
    if not os.environ.get(MDC_KEY_VARIABLE):
        raise DataError(
            f"data_source=mdc needs a Mozilla Data Collective API key in the environment variable {MDC_KEY_VARIABLE} "
            "(create one in your account on datacollective.mozillafoundation.org), e.g. "
            f"{MDC_KEY_VARIABLE}=... python download_data.py data_source=mdc data_path=<dataset id>"
        )


def _load_mdc(source, context: _SourceContext) -> _Loaded:
    _check_mdc_key(source)
    # Here, not at the top: datacollective is the optional [online] extra, needed for data_source=mdc only.
    from datacollective import download_dataset

    downloads = context.cache / "mdc"
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        # The client skips a download whose archive is already complete and resumes an interrupted one.
        archive = download_dataset(source.data_path, download_directory=str(downloads), show_progress=True)
    except Exception as error:  # the client raises HTTP, permission and not-found errors of several types
        raise DataError(f"Mozilla Data Collective download of dataset {source.data_path!r} failed: {error}") from error
    release = extract_tarball(Path(archive), context.cache / "cv")
    return _load_cv_release(release, source, context, f"MDC dataset {source.data_path}")


# ---- hf: a datasets dataset ----------------------------------------------------------------------------------


def _check_hf_input(source) -> Path | None:
    """The local dataset folder, its files checked; None for a Hub id."""
    path = Path(source.data_path).expanduser()
    if not _exists(path):
        return None
    if not path.is_dir():
        raise DataError(f"{path} (data_path) is a file; data_source=hf takes a directory or a Hub dataset id")
    check_data_files(path)
    return path


def _load_hf(source, context: _SourceContext) -> _Loaded:
    path = _check_hf_input(source)
    hf_cache = str(context.cache / "hf")
    try:
        if path is not None and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
            loaded = load_from_disk(str(path))
        elif path is not None:
            loaded = load_dataset(_file_format(path), data_dir=str(path), cache_dir=hf_cache)
        else:
            loaded = load_dataset(source.data_path, source.hf_config_name, cache_dir=hf_cache)
    except DataError:
        raise
    except Exception as error:  # datasets raises FileNotFoundError, DatasetNotFoundError, ConnectionError, ...
        cause = error.__cause__ or error  # DatasetGenerationError wraps the reader's own error
        raise DataError(f"cannot load the dataset {source.data_path!r} (data_path): {type(cause).__name__}: {cause}") from None
    description = f"dataset {source.data_path}" + (f" ({source.hf_config_name})" if source.hf_config_name else "")
    if isinstance(loaded, DatasetDict):
        splits = {name: _hf_rows(rows, source, name) for name, rows in loaded.items()}
        return _Loaded(splits, description, identity=_fingerprints(loaded))
    return _Loaded({"all": _hf_rows(loaded, source, "all")}, description, has_splits=False, identity=loaded._fingerprint)


def check_data_files(directory: Path) -> None:
    """Open every parquet and Arrow file of a local dataset, so a damaged one is named before datasets reads
    them: its own error does not say which file failed. Parquet is checked by its footer (written last, so a
    cut-short file has none), Arrow by reading its record batches through a memory map (no data copied)."""
    def damaged(file: Path, error: Exception) -> DataError:
        return DataError(f"{file} is damaged or incomplete ({type(error).__name__}: {error}): download or export it again")

    for file in sorted(directory.rglob("*.parquet")):
        try:
            pq.read_metadata(file)
        except (pa.ArrowException, OSError) as error:
            raise damaged(file, error) from None
    for file in sorted(directory.rglob("*.arrow")):
        try:
            with pa.memory_map(str(file)) as mapped:
                try:
                    pa.ipc.open_stream(mapped).read_all()
                except pa.ArrowInvalid:  # datasets writes the stream format; other tools write the file format
                    mapped.seek(0)
                    pa.ipc.open_file(mapped).read_all()
        except (pa.ArrowException, OSError) as error:
            raise damaged(file, error) from None


def _file_format(directory: Path) -> str:
    for data_format, suffix in (("parquet", ".parquet"), ("arrow", ".arrow")):
        if any(directory.rglob(f"*{suffix}")):
            return data_format
    raise DataError(f"{directory} (data_path) holds no .parquet or .arrow files and is not a save_to_disk dataset")


def _fingerprints(loaded: DatasetDict) -> str:
    return json.dumps({name: rows._fingerprint for name, rows in sorted(loaded.items())})


def _hf_rows(rows: Dataset, source, split: str) -> Dataset:
    columns = rows.column_names
    for key in ("audio_column", "text_column"):
        if getattr(source, key) not in columns:
            raise DataError(f"{key}={getattr(source, key)!r} is not a column of split {split!r}; its columns are: {', '.join(columns)}")
    audio_feature = rows.features[source.audio_column]
    if isinstance(audio_feature, Audio):
        # Undecoded, so audio goes through kowhisper.common.audio like every other source and fails the same way.
        rows = rows.cast_column(source.audio_column, Audio(decode=False))
    elif not (isinstance(audio_feature, Value) and audio_feature.dtype in ("string", "large_string")):
        raise DataError(f"audio_column={source.audio_column!r} holds {audio_feature}; expected an Audio column or file paths")
    if "id" in columns and source.audio_column != "id" and source.text_column != "id":
        # An Arrow cast of the one column, rather than a Python list of every id.
        rows = rows.cast_column("id", Value("string")).select_columns(["id", source.audio_column, source.text_column])
    else:
        rows = rows.select_columns([source.audio_column, source.text_column])
        rows = rows.add_column("id", [f"{split}-{index:06d}" for index in range(len(rows))])
    rows = rows.rename_columns({source.audio_column: "audio", source.text_column: "text"})
    return rows.select_columns(["id", "text", "audio"])


# ---- manifest: CSV / TSV / JSONL -----------------------------------------------------------------------------


def _check_manifest_input(source) -> Path:
    manifest = Path(source.data_path).expanduser()
    if not (_exists(manifest) and manifest.is_file()):
        raise DataError(f"manifest not found: {manifest} (data_path)")
    if manifest.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"manifest {manifest} must end in .csv, .tsv or .jsonl")
    return manifest


def _load_manifest(source, context: _SourceContext) -> _Loaded:
    manifest = _check_manifest_input(source)
    rows = _row_files(source, context)
    counts: dict[str, int] = {}
    has_splits = None
    for entry in manifest_entries(manifest, source.audio_column, source.text_column, key="data_path"):
        if has_splits is None:
            has_splits = source.split_column in entry.record  # the header's columns, or the first JSON object's keys
        split = str(entry.record.get(source.split_column) or "").strip() if has_splits else "all"
        rows.add(split, entry.id, entry.text, str(entry.audio))
        counts[split] = counts.get(split, 0) + 1

    if has_splits:
        known = {source.train_split, source.dev_split, source.test_split} - {""}
        unknown = {name: count for name, count in counts.items() if name not in known}
        if unknown:
            listed = ", ".join(f"{name or '(empty)'}: {count} rows" for name, count in sorted(unknown.items()))
            raise DataError(
                f"{manifest} column {source.split_column!r} has split values that are not train_split/dev_split/"
                f"test_split ({', '.join(sorted(known))}): {listed}. Rename them or set those keys to match."
            )
    return _Loaded(rows.finish(), f"manifest {manifest.resolve()}", has_splits=bool(has_splits))


@dataclass(frozen=True)
class ManifestEntry:
    line: int
    id: str  # the row's id column, else its audio path without the suffix
    audio: Path  # absolute, or relative to the manifest's folder and inside it
    text: str
    record: dict  # every column of the row


def manifest_entries(manifest: Path, audio_column: str, text_column: str, key: str = "manifest"):
    """The rows of a CSV, TSV or JSONL manifest of audio paths and transcripts, in order (a generator). `key`
    names the setting that gave the manifest, for messages. Raises DataError for a missing or unreadable file, a
    missing column, a row without audio, or a relative audio path that leads out of the manifest's folder."""
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest} ({key})")
    records = _manifest_records(manifest)
    first = next(records, None)
    if first is None:
        raise DataError(f"manifest {manifest} has no rows")
    present = set(first[1])
    for column_key, column in (("audio_column", audio_column), ("text_column", text_column)):
        if column not in present:
            raise DataError(f"{column_key}={column!r} is not a column of {manifest}; its columns are: {', '.join(first[1])}")

    base = manifest.resolve().parent
    for line, record in itertools.chain([first], records):
        where = f"{manifest} line {line}"
        audio_value = str(record.get(audio_column) or "").strip()
        if not audio_value:
            raise DataError(f"{where} has no audio path in column {audio_column!r}")
        audio_path = Path(audio_value).expanduser()
        audio_path = audio_path if audio_path.is_absolute() else _inside(base, audio_value, where)
        row_id = str(record.get("id") or PurePosixPath(audio_value).with_suffix("").as_posix())
        yield ManifestEntry(line, row_id, audio_path, str(record.get(text_column) or ""), record)


def _manifest_records(manifest: Path):
    """(line number, record) of a CSV, TSV or JSONL manifest."""
    suffix = manifest.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_records(manifest)
    if suffix in (".tsv", ".tab"):
        # Like Common Voice: transcripts may hold quote characters that are not CSV quoting.
        return _table_records(manifest, "\t", csv.QUOTE_NONE, "TSV manifest")
    if suffix == ".csv":
        return _table_records(manifest, ",", csv.QUOTE_MINIMAL, "CSV manifest")
    raise DataError(f"manifest {manifest} must end in .csv, .tsv or .jsonl")


def _jsonl_records(manifest: Path):
    try:
        with open(manifest, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{manifest} line {number} is not JSON ({error}): fix it or export the manifest again") from None
                if not isinstance(record, dict):
                    raise DataError(f"{manifest} line {number} is a JSON {type(record).__name__}, not an object of columns")
                yield number, record
    except UnicodeDecodeError as error:
        raise DataError(f"{manifest} is not UTF-8 text (byte {error.start}: {error.reason}): it is damaged or not a "
                        "JSONL manifest; export it again") from None
    except OSError as error:
        raise DataError(f"cannot read {manifest}: {error.strerror or error}") from None


# ---- kspon: KsponSpeech as AI Hub ships it ------------------------------------------------------------------------


def _check_kspon_input(source) -> KsponLayout:
    root = Path(source.data_path).expanduser()
    if not (_exists(root) and root.is_dir()):
        raise DataError(f"KsponSpeech folder not found: {root} (data_path): give the folder the AI Hub download was unzipped into")
    try:
        return find_layout(root)
    except KsponError as error:
        raise DataError(str(error)) from None


def _load_kspon(source, context: _SourceContext) -> _Loaded:
    """The splits the source names, from the official .trn lists; without them, every training folder as one pool (dev
    is then carved from it) and the eval folders as they are. Transcripts are cleaned of the corpus's marks as
    kspon_notation and kspon_unintelligible say, and what was met is counted for the report."""
    layout = _check_kspon_input(source)
    rows = _row_files(source, context)
    wanted = [name for name in dict.fromkeys((source.train_split, source.dev_split, source.test_split)) if name]
    unknown = [name for name in wanted if name not in KSPON_SPLITS]
    if unknown:
        raise DataError(f"KsponSpeech has the splits {', '.join(KSPON_SPLITS)}; {', '.join(map(repr, unknown))} is not one of "
                        "them (train_split, dev_split, test_split)")
    marks: Counter = Counter()
    utterances: Counter = Counter()
    unintelligible = 0
    try:
        for split in wanted:
            if split in layout.scripts:
                read = iter_split(layout, split)
            elif split in KSPON_EVAL_SETS:
                read = iter_folder(layout, folders=[split])
            elif split == "train":
                read = iter_folder(layout, folders=list(layout.parts))
            else:
                continue  # dev without the .trn lists is carved from train by split_ratios
            for row_id, pcm, raw in read:
                if isinstance(raw, Unreadable):
                    utterances[split] += 1
                    rows.add(split, row_id, "", str(pcm), "unreadable_transcript")
                    continue
                cleaned = clean_transcript(raw, source.kspon_notation)
                marks.update(cleaned.marks)
                utterances[split] += 1
                drop = ""
                if cleaned.unintelligible:
                    unintelligible += 1
                    drop = "unintelligible" if source.kspon_unintelligible == "drop" else ""
                rows.add(split, row_id, cleaned.text, str(pcm), drop)
    except KsponError as error:
        raise DataError(str(error)) from None
    where = "; ".join(f"{split} from {f'{split}.trn' if split in layout.scripts else 'its folders'}" for split in wanted)
    counts = {"kspon": {"notation": source.kspon_notation, "unintelligible": source.kspon_unintelligible,
                        "utterances": dict(utterances), "with_unintelligible_mark": unintelligible,
                        "marks": {mark: marks[mark] for mark in KSPON_MARKS if marks[mark]}}}
    return _Loaded(rows.finish(), f"KsponSpeech {layout.root.resolve()} ({where})", counts=counts)


# ---- segments: long recordings with the times of each utterance ----------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    where: str  # file and line or index, for messages
    id: str
    audio: Path
    start: float
    end: float
    text: str
    split: str


def _check_segments_input(source) -> Path:
    path = Path(source.data_path).expanduser()
    if not _exists(path):
        raise DataError(f"segments not found: {path} (data_path): a CSV/TSV/JSONL of audio,start,end,text or a folder of JSON files")
    if path.is_dir():
        if not any(path.rglob("*.json")):
            raise DataError(f"{path} holds no .json files: data_source=segments takes a folder of one JSON file per recording")
    elif path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"segments table {path} must end in .csv, .tsv or .jsonl (or give a folder of .json files)")
    return path


def _load_segments(source, context: _SourceContext) -> _Loaded:
    """Each segment a row: its recording's path, its start and end, its text. Segments that overlap another of their
    recording, or whose times are impossible, are kept as rows marked for dropping, so the report counts and lists them."""
    path = _check_segments_input(source)
    segments = list(_json_segments(path, source) if path.is_dir() else _table_segments(path, source))
    if not segments:
        raise DataError(f"{path} holds no segments")
    has_splits = any(segment.split for segment in segments)
    by_recording: dict[Path, list[_Segment]] = {}
    for segment in segments:
        by_recording.setdefault(segment.audio, []).append(segment)
    drops: dict[str, str] = {}
    for recording in by_recording.values():
        timed = sorted((s for s in recording if 0 <= s.start < s.end), key=lambda s: (s.start, s.end))
        drops.update({s.where: "bad_times" for s in recording if not 0 <= s.start < s.end})
        latest_end, latest = float("-inf"), None
        for segment in timed:
            if segment.start < latest_end:  # both hold speech of the other
                drops[segment.where] = drops[latest.where] = "overlap"
            if segment.end > latest_end:
                latest_end, latest = segment.end, segment
    rows = _row_files(source, context)
    for segment in segments:
        rows.add(segment.split if has_splits else "all", segment.id, segment.text, str(segment.audio), drops.get(segment.where, ""),
                 segment.start, segment.end)
    recordings = len(by_recording)
    counts = {"segments": {"recordings": recordings, "segments": len(segments),
                           "marked_for_dropping": dict(sorted(Counter(drops.values()).items()))}}
    return _Loaded(rows.finish(), f"{len(segments)} segments of {recordings} recordings in {path.resolve()}", has_splits=has_splits,
                   counts=counts, grouped=True)


def _seconds(value, where: str, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key}={value!r} is not a time in seconds") from None


def _table_segments(path: Path, source):
    first = True
    for entry in manifest_entries(path, source.audio_column, source.text_column, key="data_path"):
        where = f"{path} line {entry.line}"
        if first:
            for key, column in (("start_column", source.start_column), ("end_column", source.end_column)):
                if column not in entry.record:
                    raise DataError(f"{key}={column!r} is not a column of {path}; its columns are: {', '.join(entry.record)}")
            first = False
        start = _seconds(entry.record.get(source.start_column), where, source.start_column)
        end = _seconds(entry.record.get(source.end_column), where, source.end_column)
        row_id = str(entry.record.get("id") or f"{entry.audio.stem}_{start:09.3f}")
        yield _Segment(where, row_id, entry.audio, start, end, entry.text, str(entry.record.get(source.split_column) or "").strip())


def _field(record: dict, dotted: str, where: str):
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise DataError(f"{where} has no field {dotted!r} (segments_field, audio_column, text_column, start_column and "
                            "end_column name the fields)")
        value = value[key]
    return value


def _json_segments(folder: Path, source):
    for json_file in sorted(folder.rglob("*.json")):
        try:
            record = json.loads(json_file.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise DataError(f"{json_file} is not UTF-8 text: export it again") from None
        except json.JSONDecodeError as error:
            raise DataError(f"{json_file} is not JSON ({error})") from None
        if not isinstance(record, dict):
            raise DataError(f"{json_file} holds a JSON {type(record).__name__}, not an object with {source.segments_field!r}")
        audio_value = str(_field(record, source.audio_column, str(json_file)) or "").strip()
        if not audio_value:
            raise DataError(f"{json_file}: {source.audio_column!r} names no recording")
        audio = Path(audio_value).expanduser()
        # Relative to the folder given (data_path): AI Hub keeps the labels and the audio in sibling folders.
        audio = audio if audio.is_absolute() else _inside(folder, audio_value, str(json_file))
        listed = _field(record, source.segments_field, str(json_file))
        if not isinstance(listed, list):
            raise DataError(f"{json_file}: {source.segments_field!r} is a {type(listed).__name__}, not a list of segments")
        split = str(record.get(source.split_column) or "").strip()
        for index, segment in enumerate(listed):
            where = f"{json_file} segment {index}"
            if not isinstance(segment, dict):
                raise DataError(f"{where} is a {type(segment).__name__}, not an object")
            start = _seconds(_field(segment, source.start_column, where), where, source.start_column)
            end = _seconds(_field(segment, source.end_column, where), where, source.end_column)
            text = str(_field(segment, source.text_column, where) or "")
            row_id = str(segment.get("id") or f"{json_file.stem}_{index:04d}")
            yield _Segment(where, row_id, audio, start, end, text, split)
