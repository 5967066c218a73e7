"""Where the speech comes from: every source becomes the rows of the three workspace splits.

A split's rows are a `datasets.Dataset` with the columns id, text and audio. Audio is a file path (Common
Voice, manifests) or datasets' undecoded audio `{"bytes", "path"}` (hf). Rows stay in Arrow rather than in
Python lists so that a 50-hour parquet dataset can be split and sliced without holding its audio in memory.

    cv        a Common Voice release directory or tarball (cv-corpus-*/<lang>/{train,dev,test,validated}.tsv)
    mdc       the same release, downloaded with the Mozilla Data Collective client
    hf        a datasets dataset: a Hub id, or a local directory of parquet/arrow files or of save_to_disk
    manifest  a CSV/TSV/JSONL of audio path and transcript, with an optional split column
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from datasets import Audio, Dataset, DatasetDict, Value, concatenate_datasets

from kowhisper.workspace import SPLITS

CACHE_DIR_NAME = ".cache"
_EXTRACTED_MARKER = ".extracted"
_TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CV_SPLIT_FILES = ("train", "dev", "test")


class DataError(RuntimeError):
    """Source data that cannot be used; the message names what is wrong and what to do."""


@dataclass
class SourceRows:
    splits: dict[str, Dataset]  # workspace split name -> rows (id, text, audio)
    description: str  # what the rows came from, for messages and the report
    # The content of audio not named by a file path (hf bytes), as datasets' fingerprints of the source splits.
    identity: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Loaded:
    splits: dict[str, Dataset]  # source split name -> rows
    description: str
    has_splits: bool = True  # False: one pool of rows that must be split by ratio
    identity: str = ""


def cache_dir(workspace: Path) -> Path:
    """Downloads and extracted tarballs: inside the workspace, but not part of what its manifest vouches for."""
    return Path(workspace) / CACHE_DIR_NAME


def load_source(config) -> SourceRows:
    loaders = {"cv": _load_cv, "mdc": _load_mdc, "hf": _load_hf, "manifest": _load_manifest}
    loaded = loaders[config.data_source](config)
    splits, notes = assign_splits(loaded, config)
    splits = {name: cap_rows(rows, config.max_samples, config.split_seed) for name, rows in splits.items()}
    return SourceRows(splits=splits, description=loaded.description, identity=loaded.identity, notes=notes)


# ---- splitting -----------------------------------------------------------------------------------------------


def assign_splits(loaded: _Loaded, config) -> tuple[dict[str, Dataset], list[str]]:
    """Map source splits onto train/dev/test. With resplit, or a source without splits, every row is pooled
    and split by ratio; a configured split the source lacks (or an empty name) is carved from train."""
    ratios = dict(zip(SPLITS, config.split_ratios))
    if config.resplit or not loaded.has_splits:
        pool = _concatenate(list(loaded.splits.values()))
        why = "resplit=true" if config.resplit else "the source has no splits"
        note = f"{why}: re-split {len(pool)} rows by split_ratios {config.split_ratios} (seed {config.split_seed})"
        return split_by_ratio(pool, ratios, config.split_seed), [note]

    names = {"train": config.train_split, "dev": config.dev_split, "test": config.test_split}
    available = ", ".join(sorted(loaded.splits)) or "none"
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
        notes.append(f"{reason}: carving {split} from train by split_ratios (seed {config.split_seed})")
    carved = split_by_ratio(assigned["train"], {split: ratios[split] for split in ["train", *missing]}, config.split_seed)
    return {**assigned, **carved}, notes


def split_by_ratio(rows: Dataset, ratios: dict[str, float], seed: int) -> dict[str, Dataset]:
    """Shuffle with `seed` and cut into consecutive parts sized by `ratios` (which need not sum to 1)."""
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


def _rows(ids: list[str], texts: list[str], audio: list[str]) -> Dataset:
    return Dataset.from_dict({"id": ids, "text": texts, "audio": audio})


# ---- cv: Common Voice release --------------------------------------------------------------------------------


def _load_cv(config) -> _Loaded:
    path = Path(config.data_path).expanduser()
    if not path.exists():
        raise DataError(f"Common Voice release not found: {path} (data_path). Give the release directory or its .tar.gz.")
    if path.is_file():
        if not path.name.endswith(_TARBALL_SUFFIXES):
            raise DataError(f"{path} (data_path) is a file but not a .tar.gz/.tgz/.tar Common Voice release")
        return _load_cv_release(extract_tarball(path, cache_dir(config.workspace_dir) / "cv"), config, f"tarball {path}")
    return _load_cv_release(path, config, str(path.resolve()))


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


def _load_cv_release(root: Path, config, origin: str) -> _Loaded:
    release = find_cv_release(root, config.language_abbr)
    description = f"Common Voice release {origin}" + (f" ({release.relative_to(root)})" if release != root else "")
    if config.resplit and (release / "validated.tsv").is_file():
        # validated.tsv holds every validated clip; train/dev/test keep one clip per sentence and are much smaller.
        names = ["validated"]
    else:
        wanted = [config.train_split, config.dev_split, config.test_split]
        names = [name for name in dict.fromkeys(wanted) if name and (release / f"{name}.tsv").is_file()]
    return _Loaded({name: _read_cv_tsv(release, name) for name in names}, description)


def _read_cv_tsv(release: Path, name: str) -> Dataset:
    tsv = release / f"{name}.tsv"
    clips = release / "clips"
    ids, texts, audio = [], [], []
    # QUOTE_NONE: Common Voice sentences contain unbalanced quotes, which the default dialect would swallow.
    with open(tsv, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing_columns = {"path", "sentence"} - set(reader.fieldnames or [])
        if missing_columns:
            raise DataError(f"{tsv} lacks the Common Voice column(s) {', '.join(sorted(missing_columns))}")
        for row in reader:
            ids.append(PurePosixPath(row["path"]).stem)
            texts.append(row["sentence"] or "")
            audio.append(str(clips / row["path"]))
    return _rows(ids, texts, audio)


def extract_tarball(tarball: Path, cache: Path) -> Path:
    """Extract once into `cache`, keyed by the tarball's name and size; a marker written last tells a complete
    extraction from one a killed process left behind, which is removed and redone."""
    stat = tarball.stat()
    target = cache / f"{tarball.name}-{stat.st_size}"
    if (target / _EXTRACTED_MARKER).is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    print(f"extracting {tarball} into {target}")
    try:
        with tarfile.open(tarball, "r:*") as archive:
            archive.extractall(target, filter=_safe_member)
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(target, ignore_errors=True)
        raise DataError(f"cannot extract {tarball}: {error}") from None
    (target / _EXTRACTED_MARKER).write_text(tarball.name + "\n", encoding="utf-8")
    return target


def _safe_member(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    # data_filter alone would quietly strip a leading '/'; a release never has one, so such a tarball is refused.
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise tarfile.FilterError(f"refusing unsafe member {member.name!r} (absolute path or '..')")
    return tarfile.data_filter(member, destination)


# ---- mdc: Mozilla Data Collective ----------------------------------------------------------------------------

MDC_KEY_VARIABLE = "MDC_API_KEY"


def _load_mdc(config) -> _Loaded:
    if not os.environ.get(MDC_KEY_VARIABLE):
        raise DataError(
            f"data_source=mdc needs a Mozilla Data Collective API key in the environment variable {MDC_KEY_VARIABLE} "
            "(create one in your account on datacollective.mozillafoundation.org), e.g. "
            f"{MDC_KEY_VARIABLE}=... python download_data.py data_source=mdc data_path=<dataset id>"
        )
    from datacollective import download_dataset

    downloads = cache_dir(config.workspace_dir) / "mdc"
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        # The client skips a download whose archive is already complete and resumes an interrupted one.
        archive = download_dataset(config.data_path, download_directory=str(downloads), show_progress=True)
    except Exception as error:  # the client raises HTTP, permission and not-found errors of several types
        raise DataError(f"Mozilla Data Collective download of dataset {config.data_path!r} failed: {error}") from error
    release = extract_tarball(Path(archive), cache_dir(config.workspace_dir) / "cv")
    return _load_cv_release(release, config, f"MDC dataset {config.data_path}")


# ---- hf: a datasets dataset ----------------------------------------------------------------------------------


def _load_hf(config) -> _Loaded:
    import datasets

    path = Path(config.data_path).expanduser()
    hf_cache = str(cache_dir(config.workspace_dir) / "hf")
    try:
        if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_dir():
            loaded = datasets.load_dataset(_file_format(path), data_dir=str(path), cache_dir=hf_cache)
        elif path.exists():
            raise DataError(f"{path} (data_path) is a file; data_source=hf takes a directory or a Hub dataset id")
        else:
            loaded = datasets.load_dataset(config.data_path, config.hf_config_name, cache_dir=hf_cache)
    except DataError:
        raise
    except Exception as error:  # datasets raises FileNotFoundError, DatasetNotFoundError, ConnectionError, ...
        raise DataError(f"cannot load the dataset {config.data_path!r} (data_path): {type(error).__name__}: {error}") from None
    description = f"dataset {config.data_path}" + (f" ({config.hf_config_name})" if config.hf_config_name else "")
    if isinstance(loaded, DatasetDict):
        splits = {name: _hf_rows(rows, config, name) for name, rows in loaded.items()}
        return _Loaded(splits, description, identity=_fingerprints(loaded))
    return _Loaded({"all": _hf_rows(loaded, config, "all")}, description, has_splits=False, identity=loaded._fingerprint)


def _file_format(directory: Path) -> str:
    for data_format, suffix in (("parquet", ".parquet"), ("arrow", ".arrow")):
        if any(directory.rglob(f"*{suffix}")):
            return data_format
    raise DataError(f"{directory} (data_path) holds no .parquet or .arrow files and is not a save_to_disk dataset")


def _fingerprints(loaded: DatasetDict) -> str:
    return json.dumps({name: rows._fingerprint for name, rows in sorted(loaded.items())})


def _hf_rows(rows: Dataset, config, split: str) -> Dataset:
    columns = rows.column_names
    for key in ("audio_column", "text_column"):
        if getattr(config, key) not in columns:
            raise DataError(f"{key}={getattr(config, key)!r} is not a column of split {split!r}; its columns are: {', '.join(columns)}")
    audio_feature = rows.features[config.audio_column]
    if isinstance(audio_feature, Audio):
        # Undecoded, so audio goes through kowhisper.audio like every other source and fails the same way.
        rows = rows.cast_column(config.audio_column, Audio(decode=False))
    elif not (isinstance(audio_feature, Value) and audio_feature.dtype in ("string", "large_string")):
        raise DataError(f"audio_column={config.audio_column!r} holds {audio_feature}; expected an Audio column or file paths")
    if "id" in columns and config.audio_column != "id" and config.text_column != "id":
        ids = [str(value) for value in rows["id"]]
    else:
        ids = [f"{split}-{index:06d}" for index in range(len(rows))]
    rows = rows.select_columns([config.audio_column, config.text_column])
    rows = rows.rename_columns({config.audio_column: "audio", config.text_column: "text"})
    return rows.add_column("id", ids).select_columns(["id", "text", "audio"])


# ---- manifest: CSV / TSV / JSONL -----------------------------------------------------------------------------


def _load_manifest(config) -> _Loaded:
    manifest = Path(config.data_path).expanduser()
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest} (data_path)")
    records = _read_manifest(manifest)
    if not records:
        raise DataError(f"manifest {manifest} has no rows")
    present = set(records[0])
    for key in ("audio_column", "text_column"):
        if getattr(config, key) not in present:
            raise DataError(f"{key}={getattr(config, key)!r} is not a column of {manifest}; its columns are: {', '.join(records[0])}")

    base = manifest.resolve().parent
    groups: dict[str, tuple[list, list, list]] = {}
    has_splits = config.split_column in present
    for number, record in enumerate(records, start=1):
        audio_value = str(record.get(config.audio_column) or "").strip()
        if not audio_value:
            raise DataError(f"{manifest} row {number} has no audio path in column {config.audio_column!r}")
        audio_path = Path(audio_value).expanduser()
        audio_path = audio_path if audio_path.is_absolute() else base / audio_path
        row_id = str(record.get("id") or PurePosixPath(audio_value).with_suffix("").as_posix())
        split = str(record.get(config.split_column) or "").strip() if has_splits else "all"
        ids, texts, audio = groups.setdefault(split, ([], [], []))
        ids.append(row_id)
        texts.append(str(record.get(config.text_column) or ""))
        audio.append(str(audio_path))

    if has_splits:
        known = {config.train_split, config.dev_split, config.test_split} - {""}
        unknown = {name: len(group[0]) for name, group in groups.items() if name not in known}
        if unknown:
            listed = ", ".join(f"{name or '(empty)'}: {count} rows" for name, count in sorted(unknown.items()))
            raise DataError(
                f"{manifest} column {config.split_column!r} has split values that are not train_split/dev_split/"
                f"test_split ({', '.join(sorted(known))}): {listed}. Rename them or set those keys to match."
            )
    splits = {name: _rows(*group) for name, group in groups.items()}
    return _Loaded(splits, f"manifest {manifest.resolve()}", has_splits=has_splits)


def _read_manifest(manifest: Path) -> list[dict]:
    suffix = manifest.suffix.lower()
    with open(manifest, encoding="utf-8", newline="") as handle:
        if suffix == ".jsonl":
            records = []
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise DataError(f"{manifest} line {number} is not JSON: {error}") from None
            return records
        if suffix in (".tsv", ".tab"):
            # Like Common Voice: transcripts may hold quote characters that are not CSV quoting.
            return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        if suffix == ".csv":
            return list(csv.DictReader(handle))
    raise DataError(f"manifest {manifest} must end in .csv, .tsv or .jsonl")
