"""One router per resource: jobs, checkpoints, predict, health."""
