"""Transcribe audio, serve the demo, or merge and export the model, with no network (usage: python inference.py --help)."""

import sys

from kowhisper.common.runtime import force_offline

force_offline()  # before any Hugging Face import: they read the offline switches once, at import time

from kowhisper.serve.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
