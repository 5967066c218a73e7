"""The configuration: dataclass groups composed into one flat key space (groups), and the command line that fills it
from defaults, a YAML file and key=value overrides (cli)."""

from kowhisper.common.errors import ConfigError
from kowhisper.config.cli import (
    build_parser,
    config_to_dict,
    config_to_yaml,
    explicit_keys,
    field_help,
    load_config,
    parse_config,
    print_config_help,
    training_settings_yaml,
)
from kowhisper.config.groups import PROJECT_ROOT, SAMPLE_DATA, SOURCE_KEYS, Config, DatasetSource, TrainingStage, dataset_sources

__all__ = ["PROJECT_ROOT", "SAMPLE_DATA", "SOURCE_KEYS", "Config", "ConfigError", "DatasetSource", "TrainingStage", "build_parser",
           "config_to_dict", "config_to_yaml", "dataset_sources", "explicit_keys", "field_help", "load_config", "parse_config",
           "print_config_help", "training_settings_yaml"]
