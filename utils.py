"""Small helpers every script needs: the offline switches, logging, hashing, atomic writes, sizes."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
}
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}


def force_offline() -> None:
    """Make every Hugging Face library refuse the network. Must run before transformers/datasets are imported,
    because they read these variables once at import time."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    os.environ.update({k: v for k, v in QUIET_ENVIRONMENT.items() if k not in os.environ})
    _filter_library_noise()


def quiet_telemetry() -> None:
    """For the online phase: the Hub may be used, but nothing phones home."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    _filter_library_noise()


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


# Messages libraries print on every run that ask nothing of the user, by logger. Each is named exactly, so
# anything else those loggers say still shows.
LIBRARY_NOISE = {
    # bitsandbytes (imported by peft) tries, on CPUs with AVX512-BF16, to fetch a 4-bit kernel from the Hub through
    # the optional `kernels` package. This toolkit never runs 4-bit layers, and offline the fetch cannot work.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "transformers.generation.utils": (
        # Whisper's own generate() passes its generation_config and suppress_tokens together to the generic one.
        "Passing `generation_config` together with generation-related",
        # Whisper's generate() always carries a max_length; here max_new_tokens overriding it is the point.
        "seem to have been set",
    ),
}


def _filter_library_noise() -> None:
    """Install the LIBRARY_NOISE filters. Loggers exist before their library is imported, so this can run first."""
    for name, fragments in LIBRARY_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(*fragments))


def setup_logging(verbose: bool = False) -> logging.Logger:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return logging.getLogger("kowhisper")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# Every file or folder the toolkit writes in two moves (first under a temporary name, then renamed into place) carries
# this suffix until the rename, so whatever a killed process left half-written is found by its name alone.
PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """The fixed temporary name of `path` while it is being written: a hidden sibling ending in PARTIAL_SUFFIX."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a killed process never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX,
                                         delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` (contents and times) through a temporary name, so `target` is never half a file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(target)
    try:
        shutil.copy2(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# What to do about the OSErrors a user can fix, by errno.
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "free space on that disk, or point workspace, output_dir or cache_dir at another one",
    errno.EDQUOT: "free space within your quota, or point workspace, output_dir or cache_dir at another disk",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.EROFS: "that disk is read-only: choose a folder on a writable one",
    errno.ENAMETOOLONG: "choose a shorter name or path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.ENOENT: "check the path",
}


def describe_os_error(error: OSError) -> str:
    """An OSError from any library, as one line in the user's terms with what to do, instead of a traceback."""
    where = f": {error.filename}" if error.filename else ""
    advice = _OS_ERROR_ADVICE.get(error.errno)
    return f"{error.strerror or error}{where}" + (f"; {advice}" if advice else "")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num_bytes) < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def package_versions(names=("torch", "torchcodec", "transformers", "datasets", "peft", "bitsandbytes",
                            "accelerate", "jiwer", "soxr", "soundfile", "ctranslate2", "gradio")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


# Read at call time, so a test can point it at another machine's cpuinfo.
CPUINFO_PATH = Path("/proc/cpuinfo")


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo; empty where there is no such file."""
    if not CPUINFO_PATH.is_file():
        return set()
    for line in CPUINFO_PATH.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo, for benchmark reports."""
    if CPUINFO_PATH.is_file():
        for line in CPUINFO_PATH.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AMX or AVX512-BF16). Elsewhere bf16 autocast is emulated and
    slower than fp32, so the caller should stay in fp32."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
