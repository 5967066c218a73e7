"""Score models on a prepared split or on long recordings, with no network (usage: python evaluate_model.py --help)."""

import sys

from kowhisper.common.runtime import force_offline

force_offline()  # before any Hugging Face import: they read the offline switches once, at import time

from kowhisper.evaluate.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
