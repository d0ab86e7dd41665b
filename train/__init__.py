"""Training stage: the SPG-IM model, its configurations, checkpoints and (later) data and metrics."""
