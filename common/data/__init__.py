"""Datasets: the registry of specs, the IDX reader and the checksum-verified downloader."""
