"""Stand-ins for hardware and peers the tests cannot reach: pyadi-iio, the air between two radios."""
