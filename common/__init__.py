"""Shared code of the semalign TX and RX daemons: wire formats, models, datasets, config."""
