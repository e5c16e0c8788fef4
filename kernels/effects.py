"""Per-row contributions of the random effects to the linear predictor."""

from .config import kernel


@kernel
def add_random_effects(codes, z, effects, out):
    """out[i] += z[i] . effects[codes[i]]; rows with code -1 (new level) get nothing."""
    n = codes.shape[0]
    p = z.shape[1]
    for i in range(n):
        level = codes[i]
        if level < 0:
            continue
        total = 0.0
        for r in range(p):
            total += z[i, r] * effects[level, r]
        out[i] += total
