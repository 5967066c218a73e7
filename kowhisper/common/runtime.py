"""The process's environment: the offline switches, telemetry off, library noise filtered, logging, package versions."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from importlib.metadata import PackageNotFoundError, version

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


@contextlib.contextmanager
def peft_checkpointing_alias_quiet():
    """Around a call that wraps a model in peft (get_peft_model, PeftModel.from_pretrained): peft 0.21 reads
    transformers 5's deprecated `is_gradient_checkpointing` alias when it wraps a model, and the alias warns
    (FutureWarning) every time, at every adapter evaluated or served. The warning is about peft's code and asks
    nothing of the user, so that one message is ignored, and only inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def setup_logging(verbose: bool = False) -> logging.Logger:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return logging.getLogger("kowhisper")


def package_versions(names=("torch", "torchcodec", "transformers", "datasets", "peft", "bitsandbytes",
                            "accelerate", "jiwer", "soxr", "soundfile", "ctranslate2", "gradio")) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
