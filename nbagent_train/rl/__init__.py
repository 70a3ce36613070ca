"""The online RL loop: schedule tasks, collect, train, publish; and before/after evaluation."""
