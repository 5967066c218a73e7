"""What every group of configuration keys is built from: a key with its help text, the group base class and the check of
a key that takes one of a few values.

It sits below kowhisper.config and the model families' options modules (kowhisper.families.<family>.options), which
kowhisper.config composes into the one flat Config: so a family's options need nothing of kowhisper.config, and
kowhisper.config can import them without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from kowhisper.common.errors import ConfigError


def help_field(text: str, default=None, factory=None):
    """A dataclass field whose metadata holds the help text --help-config prints."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


# The two values of every key that keeps or drops something (ctc_latin_digits, kspon_unintelligible, ...).
KEEP_OR_DROP = ("keep", "drop")


def check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")


@dataclass
class KeyGroup:
    """A group of configuration keys: a dataclass whose fields are the keys. Groups compose into the one flat Config by
    inheritance, so a key's name is the same in every group and in every YAML file.

    Each group checks its own keys in __post_init__, after calling super().__post_init__(): the composed Config then
    runs every group's checks, each once."""

    # The group's heading in --help-config.
    title: ClassVar[str] = ""

    def __post_init__(self):
        pass

    @classmethod
    def own_keys(cls) -> tuple[str, ...]:
        """The keys this group declares itself, not those it inherits from another group, in declaration order."""
        declared = cls.__dict__.get("__annotations__", {})
        return tuple(f.name for f in fields(cls) if f.name in declared)
