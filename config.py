"""The design card's config.py: one configuration for every script, re-exported from the package (kowhisper.config),
where it lives. Dataclass defaults, then a YAML file, then `key=value` overrides:

    python train_offline.py --config my.yaml learning_rate=2e-4 lora_r=16
    python train_offline.py --print-config
    python train_offline.py --help-config

Nothing in kowhisper imports this file.
"""

from kowhisper.config import *  # noqa: F403
from kowhisper.config import __all__  # noqa: F401
