"""The error a configuration value that cannot work raises.

It sits below config.py and the model families: a family checks keys of its own (Whisper's language, say) and raises
it without importing config.py, which in turn asks kowhisper.families.registry how to group its keys for --help-config.
"""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""
