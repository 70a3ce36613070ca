"""nbagent_train: RL fine-tuning from nbagent trajectories."""
