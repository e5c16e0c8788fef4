"""Responses: y, weights, offset, mu and the family (DESIGN.md idea 3).

A response never calls the predictor; PIRLS (interlace_nb.fitting.pirls)
wires the two together.
"""

from .families import FAMILIES, Family, get_family
from .glm import GlmResponse, RowState

__all__ = ["FAMILIES", "Family", "GlmResponse", "RowState", "get_family"]
