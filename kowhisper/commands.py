"""The console commands `pip install -e .` puts on PATH, one per script of the design card. Each sets the process up
(offline switches, or quiet telemetry for the online phase) before importing its command, because the Hugging Face
libraries read those switches once, when they are first imported: that is why the imports here are inside functions."""

from __future__ import annotations

from kowhisper.common.runtime import force_offline, quiet_telemetry


def download_data() -> int:
    quiet_telemetry()
    from kowhisper.online.run import download_data

    return download_data()


def download_model() -> int:
    quiet_telemetry()
    from kowhisper.online.run import download_model

    return download_model()


def online_setup() -> int:
    quiet_telemetry()
    from kowhisper.online.run import online_setup

    return online_setup()


def train() -> int:
    force_offline()
    from kowhisper.train.run import main

    return main()


def evaluate() -> int:
    force_offline()
    from kowhisper.evaluate.run import main

    return main()


def inference() -> int:
    force_offline()
    from kowhisper.serve.run import main

    return main()
