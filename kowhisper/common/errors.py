"""The error a configuration value that cannot work raises.

It sits below kowhisper.config and the model families: a family checks keys of its own (Whisper's language, say) and
raises it without importing kowhisper.config, and so do the families' options groups (kowhisper.common.keys), which
kowhisper.config composes into the flat Config.
"""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""
