"""Constants of SUN's vote encoding and diagonal geometry, shared by Python and the numba kernels.

A leaf module (it imports nothing of the package), so that :mod:`._vote_kernels`,
:mod:`.votes` and :mod:`.axes` all read the same values without importing each other.
The meaning of the encoding constants is documented in :mod:`.votes`.
"""

import math

#: Most axes whose votes fit in one accumulator (15 x 4369 = 65535, and 15 in 4 bits).
MAX_AXES = 15
#: Fixed-point levels of one axis' probability (a resolution of 2.3e-4, finer than float16 near 1).
PROBABILITY_SCALE = 65535 // MAX_AXES
#: Bits of one class' vote counter.
VOTE_BITS = 4
#: Vote counters per ``uint16`` channel.
VOTES_PER_CHANNEL = 16 // VOTE_BITS
#: cos 45°: diagonal axes rotate two volume axes by 45 degrees.
SQRT_HALF = math.sqrt(0.5)
