"""interlace_nb: linear mixed models with crossed random effects, as lme4 fits them.

Numba kernels build the Gram blocks once; a blocked Cholesky (one dense
Schur block for crossed designs) or CHOLMOD refactors the system at every
step of an L-BFGS-B or BOBYQA search over the relative covariance factor.
Polars in, tidy Polars frames out.
"""

import os

#: OpenBLAS's idle threads spin for 2^28 cycles (about 0.1 s) after each call,
#: which halves the speed of the parallel Numba kernels that run between two
#: factorisations (docs/design.md, "Threads"); 2^4 cycles lets them sleep at once.
#: OpenBLAS reads this when SciPy's linear algebra loads, so it applies when
#: interlace_nb is imported first; a value the user set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
#: The reverse holds too: Numba's OpenMP workers spin after each parallel kernel
#: and slow the LAPACK Cholesky that follows (B2: 157 against 136 ms per
#: factorisation). Passive workers sleep at once; libgomp reads this when Numba
#: first runs a parallel kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .api import fit, glmer, glmm, lmer, lmm  # noqa: E402
from .data import DataError  # noqa: E402
from .formula import FormulaError  # noqa: E402
from .models import (  # noqa: E402
    ConvergenceWarning,
    GeneralizedLinearMixedModel,
    LinearMixedModel,
    SingularFitWarning,
)

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "FormulaError",
    "GeneralizedLinearMixedModel",
    "LinearMixedModel",
    "SingularFitWarning",
    "__version__",
    "fit",
    "glmer",
    "glmm",
    "lmer",
    "lmm",
]
