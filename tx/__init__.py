"""The semalign transmitter: PCA-encodes batches and streams them to the receiver."""
