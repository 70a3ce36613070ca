"""Rollouts: many scored episodes of an environment, on local kernels or Ray actors, to one file."""
