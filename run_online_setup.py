"""Online phase: build the one self-contained workspace folder to copy (usage: python run_online_setup.py --help)."""

import sys

from kowhisper.common.runtime import quiet_telemetry

quiet_telemetry()  # before any Hugging Face import: the Hub may be used, but nothing phones home

from kowhisper.online.run import online_setup as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
