"""The agent loop: the episode, its actions, prompts, notepad and the history of its context."""

from nbagent.agent.agent import SUBMIT_TOOL_NAME, Agent, AgentRun, RunResult
from nbagent.agent.episode import AgentRunError

__all__ = [
    "SUBMIT_TOOL_NAME",
    "Agent",
    "AgentRun",
    "AgentRunError",
    "RunResult",
]
