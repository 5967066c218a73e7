"""Online phase, data: prepare the speech corpora into the workspace (usage: python download_data.py --help)."""

import sys

from kowhisper.common.runtime import quiet_telemetry

quiet_telemetry()  # before any Hugging Face import: the Hub may be used, but nothing phones home

from kowhisper.online.run import download_data as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
