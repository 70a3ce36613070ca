"""The data contract: trajectory records (`schema`) and their JSONL files (`jsonl`).

Exporters (`nbagent.trajectory.export`) and accuracy tables (`nbagent.trajectory.evaluation`) live beside
them and are imported on their own.
"""

from nbagent.trajectory.jsonl import (
    CorruptTrajectoryError,
    TrajectoryWriter,
    read_trajectories,
    torn_tail_bytes,
    truncate_torn_tail,
)
from nbagent.trajectory.schema import (
    DEFAULT_MAX_TOKENS,
    SCHEMA_VERSION,
    Action,
    CellOutput,
    CellResult,
    CellStatus,
    ContextEvent,
    DisplayData,
    ErrorOutput,
    ExecuteResult,
    JSONDict,
    ModelCall,
    ModelInfo,
    Reward,
    SamplingSettings,
    Step,
    StreamOutput,
    TaskSpec,
    Termination,
    ToolCallRecord,
    Trajectory,
    UnfinishedCall,
    Usage,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "SCHEMA_VERSION",
    "Action",
    "CellOutput",
    "CellResult",
    "CellStatus",
    "ContextEvent",
    "CorruptTrajectoryError",
    "DisplayData",
    "ErrorOutput",
    "ExecuteResult",
    "JSONDict",
    "ModelCall",
    "ModelInfo",
    "Reward",
    "SamplingSettings",
    "Step",
    "StreamOutput",
    "TaskSpec",
    "Termination",
    "ToolCallRecord",
    "Trajectory",
    "TrajectoryWriter",
    "UnfinishedCall",
    "Usage",
    "read_trajectories",
    "torn_tail_bytes",
    "truncate_torn_tail",
]
