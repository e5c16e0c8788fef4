"""interlace_nb: linear mixed models with crossed random effects, as lme4 fits them.

Numba kernels build the Gram blocks once; CHOLMOD refactors the sparse
system at every step of a BOBYQA search over the relative covariance factor.
Polars in, tidy Polars frames out.
"""

from .api import fit, glmer, glmm, lmer, lmm
from .data import DataError
from .formula import FormulaError
from .models import (
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
