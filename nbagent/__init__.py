"""nbagent: notebook agents that act by writing Python in a real Jupyter kernel."""

from nbagent.trajectory import (
    CellResult,
    CellStatus,
    Reward,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
    read_trajectories,
)

__version__ = "0.1.0"

__all__ = [
    "CellResult",
    "CellStatus",
    "Reward",
    "TaskSpec",
    "Termination",
    "Trajectory",
    "TrajectoryWriter",
    "__version__",
    "read_trajectories",
]
