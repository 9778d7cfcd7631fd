"""The semalign receiver: parses batches, reconstructs, LoRA-adapts and classifies."""
