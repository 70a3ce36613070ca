"""nbagent_train: RL fine-tuning from nbagent trajectories.

Importing this package is light (no torch); the TRL backend loads torch, transformers, TRL and PEFT
when it is created.
"""

from nbagent_train.backends import ExportResult, TrainerBackend, create_backend, register_backend
from nbagent_train.config.base import TrainConfig
from nbagent_train.config.loading import load_config
from nbagent_train.fit import FitResult, fit
from nbagent_train.objective.advantages import AdvantageResult, compute_advantages
from nbagent_train.objective.samples import BuildSummary, Sample, SampleSet, build_samples

__all__ = [
    "AdvantageResult",
    "BuildSummary",
    "ExportResult",
    "FitResult",
    "Sample",
    "SampleSet",
    "TrainConfig",
    "TrainerBackend",
    "build_samples",
    "compute_advantages",
    "create_backend",
    "fit",
    "load_config",
    "register_backend",
]
