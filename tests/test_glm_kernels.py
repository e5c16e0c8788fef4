"""The GLM row kernels (kernels/glm.py) and the family mapping (response/families.py).

Every family-link pair is compared with the NumPy twins of R's family objects
in ``naive.py`` on random eta and y, including y on the edges of the support;
hand-made cases have the numbers written out; total deviances are checked
against R's documented formulas and against 2 (saturated - fitted)
log-likelihood from scipy.stats; the last section checks the response
validation and link errors.
"""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest
from interlace_nb.kernels import glm
from numpy.testing import assert_allclose
from scipy import stats

from interlace_nb import DataError
from interlace_nb.response import FAMILIES, get_family

EPS = np.finfo(float).eps
SEEDS = [0, 1, 2]
PAIRS = [(name, link) for name, (_, links, _) in FAMILIES.items() for link in links]

#: eta ranges inside each link's domain (sqrt, inverse, 1/mu^2 need eta > 0 here).
ETA_RANGE = {
    "identity": (0.2, 5.0),
    "log": (-3.0, 3.0),
    "logit": (-6.0, 6.0),
    "probit": (-4.0, 4.0),
    "cloglog": (-4.0, 2.5),
    "cauchit": (-20.0, 20.0),
    "inverse": (0.2, 3.0),
    "1/mu^2": (0.2, 3.0),
    "sqrt": (0.2, 3.0),
}


def run_pass(fam, eta, y, prior):
    """The kernel with fresh output buffers: (mu, w, z, dev, total)."""
    n = len(eta)
    mu, w, z, dev = (np.full(n, np.nan) for _ in range(4))
    total = glm.glm_row_pass(fam.family_code, fam.link_code, eta, y, prior, mu, w, z, dev)
    return mu, w, z, dev, total


def random_case(rng, family, link, n=200):
    """Random eta in the link's domain and y in the family's support, with edge values."""
    lo, hi = ETA_RANGE[link]
    eta = rng.uniform(lo, hi, n)
    if family == "gaussian" and link == "identity":
        eta = rng.uniform(-3, 3, n)
    mu = naive.r_linkinv(link, eta)
    prior = rng.uniform(0.5, 2.0, n)
    if family == "binomial":
        # Half Bernoulli rows (prior 1), half proportions with trials as weights.
        trials = rng.integers(1, 12, n).astype(float)
        trials[: n // 2] = 1.0
        y = rng.binomial(trials.astype(int), mu) / trials
        y[:4] = [0.0, 1.0, 0.0, 1.0]  # support edges in Bernoulli rows
        y[n // 2 : n // 2 + 2] = [0.0, 1.0]  # and in proportion rows
        prior = trials
    elif family == "poisson":
        y = rng.poisson(mu).astype(float)
        y[:3] = 0.0
    elif family == "Gamma":
        y = rng.gamma(2.0, mu / 2.0)
    elif family == "inverse.gaussian":
        y = rng.wald(mu, 4.0)
    else:
        y = mu + rng.normal(0, 1, n)
    return eta, y, prior


# ------------------------------------------------------------- constants


def test_thresholds_match_r_definitions():
    assert glm.DBL_EPSILON == EPS
    assert glm.LOGIT_THRESH == pytest.approx(-math.log(EPS), rel=1e-15)
    assert glm.PROBIT_THRESH == pytest.approx(-stats.norm.ppf(EPS), rel=1e-14)
    assert glm.CAUCHIT_THRESH == pytest.approx(1 / math.tan(math.pi * EPS), rel=1e-14)


def test_every_pair_has_a_code_and_families_follow_r():
    assert len(PAIRS) == 4 + 3 + 3 + 4 + 3
    assert {get_family(n).link for n in FAMILIES} == {"logit", "log", "inverse", "1/mu^2",
                                                      "identity"}
    codes = {(get_family(f, k).family_code, get_family(f, k).link_code) for f, k in PAIRS}
    assert len(codes) == len(PAIRS)


# ------------------------------------------------------ kernels vs twins


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("family", "link"), PAIRS)
def test_row_pass_matches_twin(family, link, seed):
    rng = np.random.default_rng(seed)
    eta, y, prior = random_case(rng, family, link)
    fam = get_family(family, link)
    mu, w, z, dev, total = run_pass(fam, eta, y, prior)
    t_mu, t_w, t_z, t_dev, t_total = naive.glm_row_pass(family, link, eta, y, prior)
    assert_allclose(mu, t_mu, rtol=1e-12, atol=0)
    assert_allclose(w, t_w, rtol=1e-11, atol=0)
    assert_allclose(z, t_z, rtol=1e-11, atol=1e-12)
    assert_allclose(dev, t_dev, rtol=1e-10, atol=1e-13)
    assert np.all(dev >= 0)
    assert total == pytest.approx(t_total, rel=1e-12)
    if (family, link) == ("binomial", "logit"):
        check_logit_binomial(eta, y, prior, (mu, w, z, dev, total),
                             (t_mu, t_w, t_z, t_dev, t_total))
    assert glm.glm_deviance(fam.family_code, fam.link_code, eta, y, prior) == pytest.approx(
        total, rel=1e-14
    )


@pytest.mark.parametrize(("family", "link"), PAIRS)
def test_start_and_linkfun_match_twin(family, link):
    rng = np.random.default_rng(7)
    eta, y, prior = random_case(rng, family, link, n=100)
    if family == "gaussian" and link != "identity":
        y = np.abs(y) + 0.1  # R's gaussian initialize needs y > 0 for log / inverse links
    fam = get_family(family, link)
    mu, eta0 = np.empty_like(y), np.empty_like(y)
    glm.glm_start(fam.family_code, fam.link_code, y, prior, mu, eta0)
    t_mu, t_eta0 = naive.glm_start(family, link, y, prior)
    assert_allclose(mu, t_mu, rtol=1e-15)
    assert_allclose(eta0, t_eta0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("link", list(ETA_RANGE))
def test_linkfun_inverts_linkinv(link):
    code = get_family(next(f for f, k in PAIRS if k == link), link).link_code
    for eta in np.linspace(*ETA_RANGE[link], 13):
        mu = glm.linkinv(code, eta)
        assert glm.linkfun(code, mu) == pytest.approx(eta, rel=1e-9, abs=1e-10)
        assert mu == pytest.approx(naive.r_linkinv(link, eta), rel=1e-13)
        assert glm.mu_eta(code, eta) == pytest.approx(naive.r_mu_eta(link, eta), rel=1e-12)


def test_probit_linkfun_tails():
    code = glm.LINK_PROBIT
    for p in [1e-300, 1e-20, EPS, 1e-6, 0.02, 0.3, 0.5, 0.7, 0.98, 1 - 1e-6, 1 - EPS]:
        assert glm.linkfun(code, p) == pytest.approx(stats.norm.ppf(p), rel=1e-12, abs=1e-15)


EXTREME_ETA = np.array([-1e6, -800.0, -45.0, -36.5, -35.0, -31.0, -29.0, -9.0, -8.0, 0.0,
                        8.0, 9.0, 29.0, 31.0, 35.0, 36.5, 45.0, 800.0, 1e6])


@pytest.mark.parametrize(("family", "link"), [("binomial", k) for k in FAMILIES["binomial"][1]]
                         + [("poisson", "log"), ("Gamma", "log"), ("gaussian", "log")])
def test_row_pass_matches_twin_at_extreme_eta(family, link):
    """Where R's guards act (saturated mu, floored mu.eta) the kernel still equals the twin."""
    eta = EXTREME_ETA if family == "binomial" else EXTREME_ETA[np.abs(EXTREME_ETA) < 700]
    n = len(eta)
    if family == "binomial":
        y = np.tile([0.0, 1.0, 0.5], n)[:n]
        prior = np.tile([1.0, 1.0, 2.0], n)[:n]
    else:
        y = np.tile([0.0, 1.0, 3.0], n)[:n] + (0.5 if family != "poisson" else 0.0)
        prior = np.ones(n)
    got = run_pass(get_family(family, link), eta, y, prior)
    with np.errstate(all="ignore"):
        want = naive.glm_row_pass(family, link, eta, y, prior)
    if (family, link) == ("binomial", "logit"):
        check_logit_binomial(eta, y, prior, got, want)
        return
    for g, t in zip(got[:4], want[:4], strict=True):
        assert np.all(np.isfinite(g))
        assert_allclose(g, t, rtol=1e-12, atol=0)


def check_logit_binomial(eta, y, prior, got, r_twin):
    """Binomial-logit's own pass against its twin, and against R's formulas up to their rounding.

    R forms V(mu) and the deviance from 1 - mu, which keeps only absolute digits
    where mu is near 0 or 1 (relative ones up to |eta| = 15 here); past
    |eta| = 30, z = eta + (y - mu) / DBL_EPSILON magnifies mu's last bit.
    """
    stable = naive.logit_binomial_row_pass(eta, y, prior)
    for g, t in zip(got[:3], stable[:3], strict=True):
        assert np.all(np.isfinite(g))
        assert_allclose(g, t, rtol=1e-12, atol=0)
    # with 0 < y < 1 the deviance cancels the saturated terms y log y + (1 - y) log(1 - y)
    whole = (y == 0.0) | (y == 1.0)
    assert_allclose(got[3][whole], stable[3][whole], rtol=1e-12, atol=0)
    assert_allclose(got[3][~whole], stable[3][~whole], rtol=1e-12, atol=1e-14)
    assert got[4] == pytest.approx(stable[4], rel=1e-13)
    mu, w, z, dev, total = got
    assert_allclose(mu, r_twin[0], rtol=1e-12, atol=0)
    assert_allclose(w, r_twin[1], rtol=1e-11, atol=4 * EPS)
    inner = np.abs(eta) <= 30.0
    assert_allclose(z[inner], r_twin[2][inner], rtol=1e-11, atol=1e-12)
    inner = np.abs(eta) <= 15.0
    assert_allclose(dev[inner], r_twin[3][inner], rtol=1e-10, atol=1e-13)
    if inner.all():
        assert total == pytest.approx(r_twin[4], rel=1e-12)


# ------------------------------------------------------ hand-made cases


def one_row(family, link, eta, y, prior=1.0):
    fam = get_family(family, link)
    mu, w, z, dev, _ = run_pass(fam, np.array([eta]), np.array([y]), np.array([prior]))
    return mu[0], w[0], z[0], dev[0]


@pytest.mark.parametrize(
    ("family", "link", "eta", "y", "prior", "expected"),
    [
        # logit at 0: mu = 1/2, mu.eta = 1/4, V = 1/4 -> w = prior / 4; z = (1 - 1/2) * 4.
        ("binomial", "logit", 0.0, 1.0, 3.0, (0.5, 0.75, 2.0, 2 * 3 * math.log(2))),
        ("binomial", "logit", 0.0, 0.25, 4.0, (0.5, 1.0, -1.0,
                                               2 * 4 * (0.25 * math.log(0.5)
                                                        + 0.75 * math.log(1.5)))),
        # probit at 0: mu.eta = 1/sqrt(2 pi) -> w = (1 / 2pi) / (1/4) = 2 / pi.
        ("binomial", "probit", 0.0, 0.0, 1.0, (0.5, 2 / math.pi, -0.5 * math.sqrt(2 * math.pi),
                                               2 * math.log(2))),
        # cauchit at 0: mu.eta = 1/pi -> w = 4 / pi^2.
        ("binomial", "cauchit", 0.0, 1.0, 1.0, (0.5, 4 / math.pi**2, 0.5 * math.pi,
                                                2 * math.log(2))),
        # cloglog at 0: mu = 1 - e^-1, mu.eta = e^-1.
        ("binomial", "cloglog", 0.0, 1.0, 1.0,
         (1 - math.exp(-1), math.exp(-2) / ((1 - math.exp(-1)) * math.exp(-1)),
          math.exp(-1) / math.exp(-1), -2 * math.log(1 - math.exp(-1)))),
        # poisson log at log 2, y = 3: mu = 2, w = 4 / 2, z = log 2 + 1/2.
        ("poisson", "log", math.log(2), 3.0, 1.0,
         (2.0, 2.0, math.log(2) + 0.5, 2 * (3 * math.log(3 / 2) - (3 - 2)))),
        # y = 0 count: deviance 2 * mu.
        ("poisson", "log", math.log(2), 0.0, 1.5, (2.0, 3.0, math.log(2) - 1.0, 2 * 1.5 * 2.0)),
        # sqrt link: w = (2 eta)^2 / eta^2 = 4 for every eta.
        ("poisson", "sqrt", 2.0, 5.0, 1.0, (4.0, 4.0, 2.25, 2 * (5 * math.log(5 / 4) - 1))),
        ("poisson", "identity", 4.0, 2.0, 1.0, (4.0, 0.25, 2.0, 2 * (2 * math.log(0.5) + 2))),
        # Gamma log at 0, y = 2: mu = 1, w = 1, z = 1, dev = -2 (log 2 - 1).
        ("Gamma", "log", 0.0, 2.0, 1.0, (1.0, 1.0, 1.0, -2 * (math.log(2) - 1))),
        # Gamma inverse at 1/2: mu = 2, mu.eta = -4, V = 4 -> w = 4; z = 1/2 + (-1)/(-4).
        ("Gamma", "inverse", 0.5, 1.0, 1.0, (2.0, 4.0, 0.75, -2 * (math.log(0.5) + 0.5))),
        ("Gamma", "identity", 2.0, 3.0, 2.0, (2.0, 0.5, 3.0,
                                              -2 * 2 * (math.log(1.5) - 0.5))),
        # inverse Gaussian 1/mu^2 at 1/4: mu = 2, mu.eta = -4, V = 8 -> w = 2.
        ("inverse.gaussian", "1/mu^2", 0.25, 1.0, 1.0, (2.0, 2.0, 0.5, 0.25)),
        ("inverse.gaussian", "log", 0.0, 3.0, 1.0, (1.0, 1.0, 2.0, 4 / 3)),
        ("gaussian", "identity", 1.5, 4.0, 2.0, (1.5, 2.0, 4.0, 2 * 2.5**2)),
        ("gaussian", "log", 0.0, 3.0, 1.0, (1.0, 1.0, 2.0, 4.0)),
        ("gaussian", "inverse", 0.5, 1.0, 1.0, (2.0, 16.0, 0.75, 1.0)),
    ],
)
def test_hand_made(family, link, eta, y, prior, expected):
    got = one_row(family, link, eta, y, prior)
    assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_r_guards_at_extreme_eta():
    # logit: |eta| > 36.04 saturates at eps / (1 + eps) and 1 / (1 + eps); mu.eta = eps past 30.
    mu, w, z, dev = one_row("binomial", "logit", 40.0, 1.0)
    assert mu == 1 / (1 + EPS) and 0 < mu < 1
    assert w == pytest.approx(EPS**2 / (mu * (1 - mu)))
    assert np.isfinite(dev) and dev >= 0
    mu, *_ = one_row("binomial", "logit", -40.0, 0.0)
    assert mu == EPS / (1 + EPS)
    assert glm.mu_eta(glm.LINK_LOGIT, 31.0) == EPS
    assert glm.mu_eta(glm.LINK_LOGIT, 29.0) == pytest.approx(math.exp(29) / (1 + math.exp(29))**2)
    # probit: eta clamped to -+8.13, mu.eta floored at eps.
    mu, *_ = one_row("binomial", "probit", 50.0, 1.0)
    assert mu == glm.linkinv(glm.LINK_PROBIT, glm.PROBIT_THRESH) and mu <= 1 - EPS / 2
    assert glm.mu_eta(glm.LINK_PROBIT, 50.0) == EPS
    assert one_row("binomial", "probit", -50.0, 0.0)[0] > 0
    # cloglog: mu in [eps, 1 - eps]; mu.eta's eta capped at 700 and floored at eps.
    assert one_row("binomial", "cloglog", 5.0, 1.0)[0] == 1 - EPS
    assert one_row("binomial", "cloglog", -40.0, 0.0)[0] == EPS
    assert glm.mu_eta(glm.LINK_CLOGLOG, 800.0) == EPS
    # cauchit: clamp at -+1/tan(pi eps) keeps mu strictly inside (0, 1).
    lo, hi = one_row("binomial", "cauchit", -1e300, 0.0)[0], one_row("binomial", "cauchit",
                                                                      1e300, 1.0)[0]
    assert 0 < lo < 1e-15 and 1 - 1e-15 < hi < 1
    # log: mu and mu.eta floored at eps (a zero count at eta = -800 has deviance 2 eps).
    mu, w, z, dev = one_row("poisson", "log", -800.0, 0.0)
    assert mu == EPS and dev == pytest.approx(2 * EPS)
    for link in ("logit", "probit", "cloglog", "cauchit"):
        for eta in (-1e6, -45.0, 45.0, 1e6):
            got = one_row("binomial", link, eta, float(eta > 0))
            assert all(np.isfinite(got)), (link, eta, got)


# -------------------------------------- deviance vs R's formulas / likelihoods


def r_documented_deviance(family, y, mu, wt):
    """The deviances as R's ?family / McCullagh & Nelder tabulate them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = np.where(y > 0, y * np.log(y / mu), 0.0)
        y1log = np.where(y < 1, (1 - y) * np.log((1 - y) / (1 - mu)), 0.0)
    return {
        "binomial": lambda: 2 * np.sum(wt * (ylogy + y1log)),
        "poisson": lambda: 2 * np.sum(wt * (ylogy - (y - mu))),
        "Gamma": lambda: 2 * np.sum(wt * (-np.log(y / mu) + (y - mu) / mu)),
        "inverse.gaussian": lambda: np.sum(wt * (y - mu) ** 2 / (y * mu**2)),
        "gaussian": lambda: np.sum(wt * (y - mu) ** 2),
    }[family]()


def likelihood_deviance(family, y, mu, wt):
    """2 (saturated - fitted) log-likelihood at unit dispersion, from scipy.stats."""
    if family == "binomial":
        n = wt
        s = np.round(y * n)
        return 2 * np.sum(stats.binom.logpmf(s, n, y) - stats.binom.logpmf(s, n, mu))
    if family == "poisson":
        return 2 * np.sum(wt * (stats.poisson.logpmf(y, y) - stats.poisson.logpmf(y, mu)))
    if family == "Gamma":  # shape 1: the exponential
        return 2 * np.sum(wt * (stats.expon.logpdf(y, scale=y) - stats.expon.logpdf(y, scale=mu)))
    if family == "inverse.gaussian":  # lambda = 1: invgauss(mu, scale=1)
        return 2 * np.sum(wt * (stats.invgauss.logpdf(y, y) - stats.invgauss.logpdf(y, mu)))
    return 2 * np.sum(wt * (stats.norm.logpdf(y, y) - stats.norm.logpdf(y, mu)))


@pytest.mark.parametrize(("family", "link"), PAIRS)
def test_total_deviance_against_formulas(family, link):
    rng = np.random.default_rng(11)
    eta, y, prior = random_case(rng, family, link)
    mu, _, _, _, total = run_pass(get_family(family, link), eta, y, prior)
    assert total == pytest.approx(r_documented_deviance(family, y, mu, prior), rel=1e-11)
    assert total == pytest.approx(likelihood_deviance(family, y, mu, prior), rel=1e-8)


# ----------------------------------------------------------- valid_eta_mu


@pytest.mark.parametrize(
    ("family", "link", "eta", "ok"),
    [
        ("binomial", "logit", [0.0, 50.0, -50.0], True),  # guards keep mu inside (0, 1)
        ("poisson", "identity", [1.0, -0.5], False),  # mu <= 0
        ("poisson", "sqrt", [1.0, 0.0], False),  # sqrt needs eta > 0
        ("Gamma", "inverse", [1.0, 0.0], False),  # eta == 0
        ("Gamma", "inverse", [1.0, -2.0], False),  # mu < 0
        ("inverse.gaussian", "1/mu^2", [1.0, -1.0], False),
        ("inverse.gaussian", "identity", [1.0, 2.0], True),
        ("gaussian", "log", [1.0, np.inf], False),
        ("gaussian", "identity", [-3.0, 2.0], True),
    ],
)
def test_valid_eta_mu(family, link, eta, ok):
    fam = get_family(family, link)
    eta = np.array(eta)
    with np.errstate(all="ignore"):
        mu = naive.r_linkinv(link, eta)
    assert glm.valid_eta_mu(fam.family_code, fam.link_code, eta, mu) is ok
    assert naive.valid_eta_mu(family, link, eta, mu) is ok


# ------------------------------------------------- families and validation


def test_get_family_defaults_and_aliases():
    assert get_family("binomial").link == "logit"
    assert get_family("poisson").link == "log"
    assert get_family("gamma").name == "Gamma" and get_family("Gamma").link == "inverse"
    assert get_family("inverse_gaussian").link == "1/mu^2"
    assert get_family("inverse.gaussian", "inverse_squared").link == "1/mu^2"
    assert get_family("gaussian", "log").link_code == glm.LINK_LOG
    fam = get_family("binomial", "probit")
    assert not fam.is_canonical and fam.canonical_link == "logit" and not fam.has_dispersion
    assert get_family("Gamma", "log").has_dispersion


@pytest.mark.parametrize(
    ("family", "link"),
    [("binomial", "log"), ("binomial", "identity"), ("poisson", "logit"), ("Gamma", "sqrt"),
     ("gaussian", "probit"), ("inverse.gaussian", "cloglog"), ("poisson", "nonsense")],
)
def test_bad_link_names_family_link_and_choices(family, link):
    with pytest.raises(DataError) as err:
        get_family(family, link)
    msg = str(err.value)
    assert repr(link) in msg and family in msg and "allowed links" in msg
    for allowed in FAMILIES[family][1]:
        assert allowed in msg


def test_unknown_family():
    with pytest.raises(DataError, match="unknown family 'tweedie'.*binomial"):
        get_family("tweedie")


@pytest.mark.parametrize(
    ("family", "y", "weights", "match"),
    [
        ("poisson", [0, 3, -1, -2], None, r"negative counts .* 2 row\(s\), first at row 2"),
        ("binomial", [0, 1, 0.5], None, r"must be 0/1 \(Bernoulli\).*row 2.*trials as weights"),
        ("binomial", [0, 2, 1], None, r"must be 0/1"),
        ("binomial", [0.5, 1.2], [2, 5], r"proportion in \[0, 1\].*row 1 \(y = 1\.2\)"),
        ("binomial", [0.5, -0.2], [2, 5], r"proportion in \[0, 1\]"),
        ("Gamma", [1.0, 0.0, 2.0], None, r"non-positive values .* Gamma .*row 1"),
        ("inverse.gaussian", [1.0, -3.0], None, r"non-positive values .* inverse\.gaussian"),
        ("poisson", [1, 2], [1, 0], r"weights must be finite and positive.*row 1"),
        ("gaussian", [1, 2], [1, -1], r"weights must be finite and positive"),
        ("binomial", [0, 1], [1, np.nan], r"weights must be finite"),
        ("poisson", [1, np.nan], None, r"non-finite"),
        ("poisson", [1, 2], [1, 2, 3], r"weights have shape \(3,\)"),
        ("gaussian", [[1, 2]], None, r"one column"),
    ],
)
def test_validate_response_rejects(family, y, weights, match):
    with pytest.raises(DataError, match=match):
        get_family(family).validate_response(np.array(y, dtype=float), weights)


def test_validate_response_accepts_and_warns():
    y, w = get_family("binomial").validate_response(np.array([0, 1, 1]))
    assert y.dtype == float and np.array_equal(w, np.ones(3))
    y, w = get_family("binomial").validate_response(np.array([0.0, 0.5, 1.0]), [3, 4, 2])
    assert np.array_equal(w, [3.0, 4.0, 2.0])
    get_family("poisson").validate_response(np.array([0, 0, 5]))
    get_family("Gamma", "log").validate_response(np.array([0.1, 2.0]))
    get_family("gaussian", "log").validate_response(np.array([-1.0, 2.0]))
    with pytest.warns(UserWarning, match="non-integer #successes"):
        get_family("binomial").validate_response(np.array([0.5, 0.3]), [2, 2])
    with pytest.warns(UserWarning, match="non-integer counts"):
        get_family("poisson").validate_response(np.array([0.5, 2.0]))


# ------------------------------------- per-row derivatives vs finite differences


@pytest.mark.parametrize(("family", "link"), PAIRS)
def test_working_weights_and_response_are_deviance_derivatives(family, link):
    """PIRLS's per-row quantities are the log-likelihood derivatives in eta:
    d(dev)/d(eta) = -2 w (z - eta) (the score), checked by central differences.
    This is the interface a family with extra parameters implements."""
    rng = np.random.default_rng(11)
    eta, y, prior = random_case(rng, family, link, n=60)
    fam = get_family(family, link)
    _, w, z, _, _ = run_pass(fam, eta, y, prior)
    step = 1e-6 * np.maximum(1.0, np.abs(eta))
    plus = run_pass(fam, eta + step, y, prior)[3]
    minus = run_pass(fam, eta - step, y, prior)[3]
    numeric = (plus - minus) / (2 * step)
    score = -2.0 * w * (z - eta)
    assert_allclose(score, numeric, rtol=1e-5, atol=1e-7 * np.abs(numeric).max())


@pytest.mark.parametrize(("family", "link"), PAIRS)
def test_array_kernels_match_twins(family, link):
    rng = np.random.default_rng(5)
    eta, _, _ = random_case(rng, family, link, n=50)
    fam = get_family(family, link)
    mu = np.empty_like(eta)
    glm.linkinv_array(fam.link_code, eta, mu)
    assert_allclose(mu, naive.r_linkinv(link, eta), rtol=1e-13)
    variance = np.empty_like(mu)
    glm.variance_array(fam.family_code, mu, variance)
    assert_allclose(variance, naive.r_variance(family, mu), rtol=1e-13)
