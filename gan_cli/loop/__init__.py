"""The training loop and what keeps it running: steps, checkpoints, resume, signals, devices and processes."""
