"""The link layer: what one batch may carry over the link TX holds to a receiver, and who picks it.

``budget`` (the link figures and the byte formulas ``B_max`` and ``N_max``), ``plan`` (the alpha
policy, the link state the operator controls, and the plan one batch is built with) and ``amc``
(which modulation for the SNR RX reports). The DSP blocks live in ``common.phy``, the bytes in
``common.wire``; nothing here imports torch or zmq, so TX and the control client can use it all.
"""
