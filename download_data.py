"""Prepare the speech data into the workspace: decode, check, featurise and save train/dev/test of each source.

    python download_data.py                                   # the bundled Korean sample
    python download_data.py data_path=cv-corpus-20.0-ko.tar.gz
    python download_data.py data_source=hf data_path=kresnik/zeroth_korean dev_split=
    python download_data.py --config configs/multi-source.yaml  # several sources (datasets: [...])
    MDC_API_KEY=... python download_data.py data_source=mdc data_path=<dataset id>

Online phase: run_online_setup.py runs this step after download_model.py, whose processor it uses.
Each source goes to <workspace>/data/<name>/. Bad rows are dropped, counted by reason in its report.json
and listed in each split's dropped.jsonl; a re-run skips splits that are already complete.
"""

import sys

from config import build_parser, parse_config
from utils import describe_os_error, quiet_telemetry


def main(argv: list[str] | None = None) -> int:
    config, _ = parse_config(build_parser(__doc__), argv)
    # Before the first Hugging Face import: they read these switches once, at import time.
    quiet_telemetry()
    from kowhisper.leakage import format_leakage
    from kowhisper.prepare import DataError, format_summary, prepare_data
    from kowhisper.workspace import source_report_path

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


if __name__ == "__main__":
    sys.exit(main())
