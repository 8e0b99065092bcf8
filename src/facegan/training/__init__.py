"""The training loop and its parts: losses, EMA, checkpoints."""
