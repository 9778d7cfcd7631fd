"""Programs built from the wings: the demo and the simulated-channel process."""
