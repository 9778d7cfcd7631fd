"""The learning side.

Torch-free, so TX can import them: ``pca`` (the PCA codec) and ``bundle`` (the bundle format,
its verification and ``load_bundle``). With torch, for RX, the benchmarks and pre-training:
``model`` (the MLP and ``load_model``), ``lora``, ``adapt`` (per-batch adaptation) and
``pretrain`` (building and writing bundles).
"""
