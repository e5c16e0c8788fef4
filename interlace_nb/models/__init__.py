"""Model classes: state plus fit()."""

from .lmm import ConvergenceWarning, LinearMixedModel, SingularFitWarning

__all__ = ["ConvergenceWarning", "LinearMixedModel", "SingularFitWarning"]
