"""Model classes: state plus fit()."""

from .base import ConvergenceWarning, SingularFitWarning
from .glmm import GeneralizedLinearMixedModel
from .lmm import LinearMixedModel

__all__ = [
    "ConvergenceWarning",
    "GeneralizedLinearMixedModel",
    "LinearMixedModel",
    "SingularFitWarning",
]
