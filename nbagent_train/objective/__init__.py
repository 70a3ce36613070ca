"""The objective: trajectories to token-exact samples, advantages, micro-batches and the losses."""
