"""The training configuration: the recipe sections, loaded from YAML and overridden from flags.

`base` holds `TrainConfig` and its sections, `sft` and `rl` the commands' larger recipes, `loading` the
YAML files and overrides; their public names are exported here.
"""

from nbagent_train.config.base import (
    SMOLLM2_ALIAS,
    AdvantageConfig,
    Aggregation,
    Estimator,
    LoraSettings,
    LossConfig,
    Objective,
    OptimConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from nbagent_train.config.loading import (
    build_config,
    dump_config,
    load_config,
    parse_override,
    read_config_file,
    set_dotted,
)
from nbagent_train.config.rl import (
    AgentSection,
    EnvSection,
    LoopSection,
    RLConfig,
    RolloutSection,
    ServerSection,
)
from nbagent_train.config.sft import SelectConfig, SFTConfig

__all__ = [
    "SMOLLM2_ALIAS",
    "AdvantageConfig",
    "AgentSection",
    "Aggregation",
    "EnvSection",
    "Estimator",
    "LoopSection",
    "LoraSettings",
    "LossConfig",
    "Objective",
    "OptimConfig",
    "RLConfig",
    "RolloutSection",
    "RunConfig",
    "SFTConfig",
    "SampleConfig",
    "SelectConfig",
    "ServerSection",
    "TrainConfig",
    "build_config",
    "dump_config",
    "load_config",
    "parse_override",
    "read_config_file",
    "set_dotted",
]
