"""The agent loop: the episode, its actions, prompts, notepad and the history of its context."""
