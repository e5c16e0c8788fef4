"""Responses: y, weights, offset, mu and the family (DESIGN.md idea 3).

For now only the family/link mapping the GLM kernels need; response classes
and PIRLS come with the GLMM issue.
"""

from .families import FAMILIES, Family, get_family

__all__ = ["FAMILIES", "Family", "get_family"]
