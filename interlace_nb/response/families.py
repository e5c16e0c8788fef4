"""GLM families and links by name, mapped to the integer codes of ``kernels/glm.py``.

Names and defaults follow R: ``binomial``, ``poisson``, ``Gamma``,
``inverse.gaussian`` and ``gaussian``, each with its canonical link as the
default and the links R's family constructor accepts (binomial limited to
logit, probit, cloglog and cauchit).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from interlace_nb.data import DataError
from interlace_nb.kernels import glm as _glm

#: Link name -> kernel code; "1/mu^2" is R's name for the inverse-squared link.
LINK_CODES: dict[str, int] = {
    "identity": _glm.LINK_IDENTITY,
    "log": _glm.LINK_LOG,
    "logit": _glm.LINK_LOGIT,
    "probit": _glm.LINK_PROBIT,
    "cloglog": _glm.LINK_CLOGLOG,
    "cauchit": _glm.LINK_CAUCHIT,
    "inverse": _glm.LINK_INVERSE,
    "1/mu^2": _glm.LINK_INVERSE_SQUARED,
    "sqrt": _glm.LINK_SQRT,
}
_LINK_ALIASES = {"inverse_squared": "1/mu^2", "inverse_square": "1/mu^2"}

#: family name -> (kernel code, allowed links, canonical link).
FAMILIES: dict[str, tuple[int, tuple[str, ...], str]] = {
    "binomial": (_glm.FAMILY_BINOMIAL, ("logit", "probit", "cloglog", "cauchit"), "logit"),
    "poisson": (_glm.FAMILY_POISSON, ("log", "sqrt", "identity"), "log"),
    "Gamma": (_glm.FAMILY_GAMMA, ("inverse", "log", "identity"), "inverse"),
    "inverse.gaussian": (
        _glm.FAMILY_INVERSE_GAUSSIAN,
        ("1/mu^2", "inverse", "log", "identity"),
        "1/mu^2",
    ),
    "gaussian": (_glm.FAMILY_GAUSSIAN, ("identity", "log", "inverse"), "identity"),
}
_FAMILY_ALIASES = {
    "bernoulli": "binomial",
    "gamma": "Gamma",
    "inverse_gaussian": "inverse.gaussian",
    "inversegaussian": "inverse.gaussian",
    "normal": "gaussian",
}

#: Relative tolerance for "is an integer" checks on counts and successes.
_INTEGER_TOL = 1e-8


@dataclass(frozen=True)
class Family:
    """A GLM family with its link: names, kernel codes and response checks."""

    name: str
    link: str
    links: tuple[str, ...]
    canonical_link: str
    family_code: int
    link_code: int

    @property
    def is_canonical(self) -> bool:
        return self.link == self.canonical_link

    @property
    def has_dispersion(self) -> bool:
        """Whether the scale is estimated (Gamma, inverse Gaussian, gaussian) or fixed at 1."""
        return self.name not in ("binomial", "poisson")

    def validate_response(
        self, y: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check y (and prior weights) lie in the family's support; return them as float arrays.

        binomial: without weights y must be 0/1 (Bernoulli); with weights y is a
        proportion in [0, 1] and the weights are the numbers of trials (a
        warning if successes = y * weights are not whole numbers, as R gives).
        poisson: y >= 0 (a warning for non-integer counts). Gamma and inverse
        Gaussian: y > 0. Weights, when given, must be finite and positive.
        """
        y = np.asarray(y, dtype=float)
        if y.ndim != 1:
            raise DataError(f"the response must be one column, got an array of shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise DataError(
                f"the {self.name} response has {_count(~np.isfinite(y))} non-finite value(s)"
            )
        if weights is None:
            w = np.ones_like(y)
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape != y.shape:
                raise DataError(
                    f"weights have shape {w.shape} but the response has shape {y.shape}"
                )
            bad = ~np.isfinite(w) | (w <= 0)
            if bad.any():
                raise DataError(
                    f"weights must be finite and positive; {_count(bad)} are not "
                    f"(first at row {_first(bad)}: {float(w[_first(bad)])!r})"
                )
        if self.name == "binomial":
            self._check_binomial(y, w, weights is not None)
        elif self.name == "poisson":
            bad = y < 0
            if bad.any():
                raise DataError(
                    f"negative counts are not allowed for the poisson family: {_count(bad)} "
                    f"row(s), {_where(y, bad)}"
                )
            if not _whole(y).all():
                warnings.warn("non-integer counts in a poisson model", UserWarning, stacklevel=2)
        elif self.name in ("Gamma", "inverse.gaussian"):
            bad = y <= 0
            if bad.any():
                raise DataError(
                    f"non-positive values are not allowed for the {self.name} family: "
                    f"{_count(bad)} row(s), {_where(y, bad)}"
                )
        return y, w

    def _check_binomial(self, y: np.ndarray, w: np.ndarray, has_weights: bool) -> None:
        if not has_weights:
            bad = (y != 0) & (y != 1)
            if bad.any():
                raise DataError(
                    "a binomial response without weights must be 0/1 (Bernoulli): "
                    f"{_count(bad)} row(s) are not, {_where(y, bad)}; "
                    "for proportions pass the numbers of trials as weights"
                )
            return
        bad = (y < 0) | (y > 1)
        if bad.any():
            raise DataError(
                "a binomial response with weights must be a proportion in [0, 1]: "
                f"{_count(bad)} row(s) are not, {_where(y, bad)}"
            )
        if not _whole(y * w).all():
            warnings.warn(
                "non-integer #successes in a binomial model (y * weights should be whole "
                "numbers of successes)",
                UserWarning,
                stacklevel=3,
            )


def get_family(name: str, link: str | None = None) -> Family:
    """The family called ``name`` (R's spelling or an alias) with ``link`` or its canonical link.

    Raises ``DataError`` for an unknown family or a link the family does not allow.
    """
    key = name if name in FAMILIES else _FAMILY_ALIASES.get(name.lower(), name.lower())
    if key not in FAMILIES:
        raise DataError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}")
    code, links, canonical = FAMILIES[key]
    link_name = canonical if link is None else _LINK_ALIASES.get(link, link)
    if link_name not in links:
        raise DataError(
            f"link {link!r} is not allowed for the {key} family; allowed links: {', '.join(links)}"
        )
    return Family(
        name=key,
        link=link_name,
        links=links,
        canonical_link=canonical,
        family_code=code,
        link_code=LINK_CODES[link_name],
    )


def _count(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _where(values: np.ndarray, mask: np.ndarray) -> str:
    i = _first(mask)
    return f"first at row {i} (y = {float(values[i])!r})"


def _whole(values: np.ndarray) -> np.ndarray:
    return np.abs(values - np.round(values)) <= _INTEGER_TOL * np.maximum(1.0, np.abs(values))
