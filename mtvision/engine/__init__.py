"""Training, evaluation, checkpoints and logs: the parts that compose models, data and metrics."""
