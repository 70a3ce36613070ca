"""Environments: tasks with verifiable rewards, found by name, scored per episode."""
