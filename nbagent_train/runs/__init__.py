"""A run folder: its layout and state, metrics, and plots."""
