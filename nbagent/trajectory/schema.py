"""The trajectory data contract: the records of one finished episode.

Everything an RL trainer or an analyst needs is recorded here, token-exact where the model server
returns token ids. This module depends on pydantic only (see docs/architecture.md, layer rules).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

JSONDict = dict[str, Any]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------
# Cell outputs, in nbformat v4 shapes
# --------------------------------------------------------------------------------------------------


class StreamOutput(_Record):
    """Text written to stdout or stderr."""

    output_type: Literal["stream"] = "stream"
    name: Literal["stdout", "stderr"]
    text: str


class ExecuteResult(_Record):
    """The value of the last expression of a cell, as a mime bundle."""

    output_type: Literal["execute_result"] = "execute_result"
    data: JSONDict
    metadata: JSONDict = Field(default_factory=dict)
    execution_count: int | None = None


class DisplayData(_Record):
    """A rich display (plots: ``image/png`` kept as base64 data)."""

    output_type: Literal["display_data"] = "display_data"
    data: JSONDict
    metadata: JSONDict = Field(default_factory=dict)


class ErrorOutput(_Record):
    """An exception raised by the cell."""

    output_type: Literal["error"] = "error"
    ename: str
    evalue: str
    traceback: list[str] = Field(default_factory=list)


CellOutput = Annotated[
    StreamOutput | ExecuteResult | DisplayData | ErrorOutput, Field(discriminator="output_type")
]


class CellStatus(StrEnum):
    """How a cell ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CRASHED = "crashed"


class ToolCallRecord(_Record):
    """One call of a host tool made by kernel code."""

    name: str
    args: list[Any] = Field(default_factory=list)
    kwargs: JSONDict = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    latency_s: float = 0.0


class CellResult(_Record):
    """The outcome of executing one cell in a kernel."""

    code: str
    status: CellStatus
    outputs: list[CellOutput] = Field(default_factory=list)
    execution_count: int | None = None
    duration_s: float = 0.0
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    state_lost: bool = False
    """True when the kernel was restarted during or after this cell (its variables are gone)."""
    note: str | None = None
    """A human-readable explanation of an abnormal end (timeout, crash, restart)."""

    @property
    def ok(self) -> bool:
        return self.status is CellStatus.OK


# --------------------------------------------------------------------------------------------------
# Model calls
# --------------------------------------------------------------------------------------------------


DEFAULT_MAX_TOKENS = 3072
"""Token limit of a reply when the agent's sampling settings give none: L0's budget per step."""


class SamplingSettings(_Record):
    """Sampling parameters sent with every model call."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    extra: JSONDict = Field(default_factory=dict)
    """Provider-specific request fields passed through unchanged."""


class Usage(_Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ModelInfo(_Record):
    """Which model produced an episode."""

    provider: str
    """`openai`, `litellm`, `local`, `scripted`, ..."""
    model: str
    base_url: str | None = None
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    policy_version: int | str | None = None


class ModelCall(_Record):
    """One request to the model and exactly what came back."""

    messages: list[JSONDict]
    """The chat messages sent, exactly (including an assistant prefill as the last message, if any)."""
    prefill: str | None = None
    """Text the assistant turn was started with; the completion continues it."""
    completion: str
    """The raw completion text exactly as sampled (never repaired; excludes the prefill)."""
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    completion_logprobs: list[float] | None = None
    """Behaviour logprob of each completion token, aligned with `completion_token_ids`."""
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_s: float = 0.0
    model: str | None = None
    """Model name the server reports (e.g. the LoRA adapter that served it)."""


class UnfinishedCall(_Record):
    """A model call a limit cut before it replied: the episode's time ran out, or it was cancelled."""

    step_index: int
    """The step the reply was for (0-based, like `Step.index`)."""
    messages: list[JSONDict]
    """The chat messages sent, as `ModelCall.messages` records them (an assistant prefill last)."""
    prefill: str | None = None
    started_at: float
    """Unix time the call was sent."""
    ran_s: float
    """How long it had run when it was cut."""
    reason: str
    """Why it stopped, e.g. ``episode timeout of 240 s reached during the model call``."""


# --------------------------------------------------------------------------------------------------
# Steps and episodes
# --------------------------------------------------------------------------------------------------


class Action(_Record):
    """What the parser made of a completion."""

    kind: Literal["code", "format_error"]
    think: str | None = None
    code: str | None = None
    error: str | None = None
    """For `format_error`: what was wrong, as told to the model."""


class ContextEvent(_Record):
    """A change the context policy made to the history before a model call."""

    kind: Literal["trim", "summarize"]
    dropped_steps: list[int] = Field(default_factory=list)
    tokens_before: int = 0
    tokens_after: int = 0
    detail: str | None = None


class Step(_Record):
    """One model call, the action parsed from it, and the cell it ran."""

    index: int
    model_call: ModelCall
    assistant_text: str | None = None
    """The assistant message the step added to the history, exactly: the prefill + completion as the
    action parser closed it (None in files from before it was recorded)."""
    action: Action
    cell: CellResult | None = None
    observation: str = ""
    """The text fed back to the model for this step (rendered cell output or a format correction)."""
    context_events: list[ContextEvent] = Field(default_factory=list)
    notepad: str | None = None
    """The notepad rendering included in this step's prompt."""


class Termination(StrEnum):
    """Why an episode ended."""

    SUBMITTED = "submitted"
    MAX_STEPS = "max_steps"
    TIMEOUT = "timeout"
    TOKEN_BUDGET = "token_budget"
    FORMAT = "format"
    ERROR = "error"
    CANCELLED = "cancelled"


class Reward(_Record):
    total: float
    breakdown: dict[str, float] = Field(default_factory=dict)


class TaskSpec(_Record):
    id: str
    prompt: str
    references: list[Any] = Field(default_factory=list)
    metadata: JSONDict = Field(default_factory=dict)


class Trajectory(_Record):
    """A whole episode."""

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    task: TaskSpec
    environment: str | None = None
    split: str | None = None
    group_id: str | None = None
    sample_index: int = 0
    model: ModelInfo
    system_prompt: str = ""
    task_message: str | None = None
    """The user message that opened the conversation: the task as the agent rendered it (None in records
    written before this field)."""
    steps: list[Step] = Field(default_factory=list)
    final_answer: Any = None
    termination: Termination
    termination_detail: str | None = None
    """One sentence for a person on why the episode ended (None in files from before it was recorded)."""
    error: str | None = None
    unfinished_call: UnfinishedCall | None = None
    """The model call in flight when the episode's time ran out or it was cancelled, if one was."""
    reward: Reward | None = None
    started_at: float = 0.0
    """Unix time."""
    wall_s: float = 0.0
    versions: dict[str, str] = Field(default_factory=dict)
    metadata: JSONDict = Field(default_factory=dict)

    def to_json_line(self) -> str:
        return self.model_dump_json(exclude_none=False) + "\n"
