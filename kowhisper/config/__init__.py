"""The configuration: dataclass groups composed into one flat key space (groups; each model family's own group is its
options module, kowhisper.families.<family>.options), and the command line that fills it from defaults, a YAML file
and key=value overrides (cli)."""

from kowhisper.common.errors import ConfigError
from kowhisper.config.cli import (
    ONLINE_ONLY_KEYS,
    build_parser,
    config_key_groups,
    config_to_dict,
    config_to_yaml,
    explicit_keys,
    field_help,
    load_config,
    parse_config,
    print_config_help,
    training_settings_yaml,
)
from kowhisper.config.groups import (
    GROUPS,
    PROJECT_ROOT,
    SAMPLE_DATA,
    SOURCE_KEYS,
    Config,
    CTCOptions,
    DataGroup,
    DatasetSource,
    EvalGroup,
    ModelGroup,
    OnlineGroup,
    ServeGroup,
    TrainGroup,
    TrainingArgumentsGroup,
    TrainingStage,
    WhisperOptions,
    WorkspaceGroup,
    augment_probabilities,
    dataset_sources,
)

__all__ = ["GROUPS", "ONLINE_ONLY_KEYS", "PROJECT_ROOT", "SAMPLE_DATA", "SOURCE_KEYS", "CTCOptions", "Config", "ConfigError",
           "DataGroup", "DatasetSource", "EvalGroup", "ModelGroup", "OnlineGroup", "ServeGroup", "TrainGroup",
           "TrainingArgumentsGroup", "TrainingStage", "WhisperOptions", "WorkspaceGroup", "augment_probabilities", "build_parser",
           "config_key_groups",
           "config_to_dict", "config_to_yaml", "dataset_sources", "explicit_keys", "field_help", "load_config", "parse_config",
           "print_config_help", "training_settings_yaml"]
