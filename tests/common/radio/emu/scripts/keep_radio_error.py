"""Keep a failed ``PlutoRadio.transmit()``'s error (and its cause) until the process exits."""

import sys

import numpy as np

from common.errors import RadioError
from common.radio.pluto import PlutoConfig, PlutoRadio

KEPT = []
radio = PlutoRadio(PlutoConfig(uri=sys.argv[1], reconnect_attempts=0, tx_buffer_size=4096)).open()
try:
    radio.transmit(np.zeros(4096, dtype=np.complex64))
except RadioError as exc:
    KEPT.append(exc)
    print("kept", repr(exc), repr(exc.__cause__), flush=True)
sys.exit(0)
