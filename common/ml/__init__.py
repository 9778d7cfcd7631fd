"""The learning side.

Torch-free, so TX and config loading can import them: ``config`` (adaptation settings and
alignment policies), ``pca`` (the PCA codec) and ``bundle`` (the bundle format, its verification
and ``load_bundle``). With torch, for RX, the benchmarks and pre-training: ``model`` (the MLP and
``load_model``), ``lora``, ``adapt`` (``Adapter``: every batch from the base), ``policy``
(``Aligner``: adapters carried across batches, the gate), ``alignment`` (``Alignment``, the one
interface RX adapts through, and ``open_alignment``), ``bank`` (the distilled adapter bank),
``pretrain`` and ``pretrain_cli`` (building and writing bundles, ``semalign pretrain``).
"""
