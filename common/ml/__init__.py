"""The learning side: the MLP and PCA codec, LoRA, per-batch adaptation, bundles and pre-training."""
