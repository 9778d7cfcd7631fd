"""pyadi-iio without the adapter: keep the TX push's ``OSError`` until exit (pylibiio then crashes)."""

import sys

import adi
import numpy as np

KEPT = []
dev = adi.Pluto(sys.argv[1])
dev.tx_enabled_channels = [0]
try:
    dev.tx(np.zeros(4096, dtype=np.complex128))
except OSError as exc:
    KEPT.append(exc)
    print("kept", repr(exc), flush=True)
del dev
sys.exit(0)
