"""The command line every script shares: flags, `key=value` overrides and a YAML file merged over the dataclass
defaults by OmegaConf, --print-config and --help-config."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kowhisper.common.errors import ConfigError
from kowhisper.config.groups import GROUPS, SOURCE_KEYS, Config, DatasetSource


def field_help() -> dict[str, str]:
    helps = {f.name: f.metadata.get("help", "") for f in fields(Config)}
    helps.update({f"datasets[].{f.name}": f.metadata.get("help", "") for f in fields(DatasetSource)})
    return helps


def config_key_groups() -> list[tuple[str, list[str]]]:
    """(title, keys) of each group of kowhisper.config.groups.GROUPS, as the groups declare them: the keys every model
    family reads, then each family's own. A dataset entry's keys (datasets[].name, ...) follow the datasets key."""
    entry_keys = [f"datasets[].{f.name}" for f in fields(DatasetSource)]
    return [(group.title, [name for key in group.own_keys() for name in [key, *(entry_keys if key == "datasets" else [])]])
            for group in GROUPS]


def print_config_help() -> None:
    """Every key with its help, group by group."""
    helps = field_help()
    for title, keys in config_key_groups():
        print(f"==== {title} ====\n")
        for name in keys:
            print(f"{name}\n    {helps[name]}")
        print()


def _names_existing_file(item: str) -> bool:
    try:
        return Path(item).exists()
    except OSError:  # e.g. ENAMETOOLONG: a 12-name target_modules list is longer than any file name may be
        return False


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags every script shares; scripts add their own before calling `parse_config`."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: key=value with any config field, e.g. learning_rate=2e-4 lora_r=16. "
        "See --print-config for the fields and their values, --help-config for what each means.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of config fields, applied before key=value overrides.")
    parser.add_argument("--print-config", action="store_true", help="Print the final config as YAML and exit.")
    parser.add_argument("--help-config", action="store_true", help="List every config field with its help and exit.")
    parser.add_argument("rest", nargs="*", metavar="key=value", help="Config overrides (and, for inference.py, audio files).")
    return parser


def load_config(overrides: list[str] | None = None, config_file: Path | None = None) -> Config:
    """defaults < YAML file < key=value overrides. Raises ConfigError naming the bad key or value."""
    try:
        merged = OmegaConf.structured(Config)
        if config_file is not None:
            if not Path(config_file).is_file():
                raise ConfigError(f"config file not found: {config_file}")
            merged = OmegaConf.merge(merged, OmegaConf.load(config_file))
        texts = [item for item in overrides or [] if item.partition("=")[0] in TEXT_KEYS]
        others = [item for item in overrides or [] if item not in texts]
        if others:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(others))
        for item in texts:
            key, _, value = item.partition("=")
            OmegaConf.update(merged, key, _text_value(value))
        return OmegaConf.to_object(merged)
    except yaml.YAMLError as error:
        raise ConfigError(f"config error: cannot read a value as YAML ({str(error).splitlines()[0]}); quote it, e.g. "
                          "key='\"a: b\"'") from None
    except OmegaConfBaseException as error:
        # OmegaConf's message is precise but multi-line; its first line plus the key is what a user needs.
        key = getattr(error, "full_key", None) or ""
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        hint = " (see --help-config for the valid keys)" if "not in" in first_line else ""
        raise ConfigError(f"config error{f' at {key!r}' if key else ''}: {first_line}{hint}") from None


# Keys whose value is text: a prompt may hold ": " or "[", which YAML would read as a mapping or a list.
TEXT_KEYS = frozenset(f.name for f in fields(Config) if str(f.type).replace(" ", "") in ("str", "str|None"))


def _text_value(value: str) -> str | None:
    """A text key's value as YAML reads it (quotes removed, null), or as written when YAML would make a mapping, a
    list or a number of it."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if parsed is None or isinstance(parsed, str) else value


def explicit_keys(overrides: list[str] | None = None, config_file: Path | None = None) -> frozenset[str]:
    """The top-level keys the user set, in the YAML file or as key=value, whatever the value: what a convenience switch
    such as quick_test must leave as it is."""
    keys = {item.split("=", 1)[0].split(".", 1)[0].split("[", 1)[0] for item in overrides or []}
    if config_file is not None:
        keys |= set(OmegaConf.load(config_file).keys())
    return frozenset(keys)


def config_to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


# Keys only the online phase reads: what data and wheels to fetch. A training run's record leaves them out, since the
# workspace, not these keys, decides what it trained on (its manifest names the sources).
ONLINE_ONLY_KEYS = (*SOURCE_KEYS, "datasets", "data_source", "wheelhouse", "wheelhouse_python_version", "wheelhouse_platform",
                    "wheelhouse_requirements", "cache_dir", "num_proc", "max_duration_s", "max_label_tokens")


def training_settings_yaml(config: Config) -> str:
    """The config as YAML without the online-only keys: what a run records as its settings."""
    settings = {key: value for key, value in config_to_dict(config).items() if key not in ONLINE_ONLY_KEYS}
    return OmegaConf.to_yaml(OmegaConf.create(settings))


def config_to_dict(config: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(config))


def parse_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """Parse flags, split `key=value` overrides from positional arguments, merge the config, honour --print-config.

    Positional arguments without '=' stay in `args.paths` (inference.py uses them as audio files); `args.explicit_keys`
    holds the keys set in the file or on the command line.
    """
    # Intermixed, so flags may come after key=value items too: `inference.py workspace=DIR --demo server_port=8000`.
    args = parser.parse_intermixed_args(argv)
    overrides = [item for item in args.rest if "=" in item and not _names_existing_file(item)]
    args.paths = [item for item in args.rest if item not in overrides]
    if args.help_config:
        print_config_help()
        sys.exit(0)
    try:
        config = load_config(overrides, args.config)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    if args.print_config:
        print(config_to_yaml(config), end="")
        sys.exit(0)
    args.explicit_keys = explicit_keys(overrides, args.config)
    return config, args
