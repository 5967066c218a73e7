"""Fine-tune the workspace's model on its Korean data, with no network (usage: python train_offline.py --help)."""

import sys

from kowhisper.common.runtime import force_offline

force_offline()  # before any Hugging Face import: they read the offline switches once, at import time

from kowhisper.train.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
