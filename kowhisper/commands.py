"""The console commands `pip install -e .` puts on PATH, one per script of the design card. Each sets the process up
(offline switches, or quiet telemetry for the online phase) before importing its command, because the Hugging Face
libraries read those switches once, when they are first imported: that is why the command's module is imported only
when the command runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from kowhisper.common.runtime import force_offline, quiet_telemetry


def _command(set_up: Callable[[], None], module: str, function: str) -> Callable[[], int]:
    def run() -> int:
        set_up()
        return getattr(importlib.import_module(module), function)()

    run.__name__ = function
    return run


download_data = _command(quiet_telemetry, "kowhisper.online.run", "download_data")
download_model = _command(quiet_telemetry, "kowhisper.online.run", "download_model")
online_setup = _command(quiet_telemetry, "kowhisper.online.run", "online_setup")
train = _command(force_offline, "kowhisper.train.run", "main")
evaluate = _command(force_offline, "kowhisper.evaluate.run", "main")
inference = _command(force_offline, "kowhisper.serve.run", "main")
