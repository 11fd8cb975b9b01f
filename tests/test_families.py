"""Response families: exact ell, its derivatives, log-densities, moments, CDFs, validation.

Every family is checked against an independent computation: ``ell`` against
adaptive quadrature of ``loglik`` times the normal density, the derivatives
against central differences of ``ell``, ``loglik``/``cdf`` against
scipy.stats, and the sample moments against ``mean``/``variance``.
"""
import numpy as np
import pytest
from scipy import integrate, special, stats

from jsdm.exceptions import DataWarning, JSDMError
from jsdm.families import (Beta, Binomial, Family, Gamma, Gaussian, NegativeBinomial, Ordinal,
                           Poisson, Tweedie, ZeroInflatedPoisson, get_family)

# (name, link, y values, s values); y grids include huge counts, s grids tiny/huge dispersion
CASES = {
    "poisson": ("poisson", None, [0.0, 1.0, 7.0, 250.0, 1e5], [None]),
    "nb": ("negative_binomial", None, [0.0, 1.0, 7.0, 250.0, 1e5], [-12.0, -2.0, 0.5, 6.0]),
    "binomial-logit": ("binomial", "logit", [0.0, 1.0], [None]),
    "binomial-probit": ("binomial", "probit", [0.0, 1.0], [None]),
    "binomial-cloglog": ("binomial", "cloglog", [0.0, 1.0], [None]),
    "gaussian": ("gaussian", None, [-40.0, -1.3, 0.0, 2.5, 35.0], [-3.0, 0.0, 2.0]),
    "gamma": ("gamma", None, [1e-3, 0.4, 3.0, 250.0], [-4.0, 0.0, 2.0]),
    "tweedie": ("tweedie", None, [0.0, 0.02, 1.0, 40.0], [-3.0, 0.0, 2.0]),
    "zip": ("zip", None, [0.0, 1.0, 7.0, 250.0], [-9.0, -2.0, 0.0, 3.0]),
    "beta": ("beta", None, [1e-4, 0.2, 0.7, 0.9999], [-0.5, 1.0, 6.0]),
}
IDS = list(CASES)
M_GRID = np.array([-30.0, -4.0, -0.7, 0.0, 1.5, 5.0, 11.5, 30.0])
V_GRID = np.array([0.0, 1e-4, 0.05, 0.4, 0.9, 1.3, 5.0, 12.0])


def make(case):
    name, link, ys, ss = CASES[case]
    return get_family(name, link), ys, ss


def grid(case, m=M_GRID, v=V_GRID):
    """Cells (y, m, v) as flat arrays and the dispersion values to try."""
    fam, ys, ss = make(case)
    Y, Mm, Vv = np.meshgrid(np.asarray(ys), m, v, indexing="ij")
    return fam, Y.ravel(), Mm.ravel(), Vv.ravel(), ss


def sarr(s, like):
    return None if s is None else np.full(np.shape(like), s)


def quad_ell(fam, y, m, v, s):
    """E[log f(y | m + sqrt(v) Z)] by adaptive quadrature (independent of the families' rules)."""
    if v == 0:
        return float(fam.loglik(np.array([y]), np.array([m]), sarr(s, [1]))[0])
    sd = np.sqrt(v)
    sa = sarr(s, [1])

    def f(z):
        return float(fam.loglik(np.array([y]), np.array([m + sd * z]), sa)[0]) * stats.norm.pdf(z)

    kink = -m / sd if abs(m / sd) < 12 else None     # where the link's curvature sits
    pts = [p for p in (kink, -8.0, 8.0) if p is not None]
    val, _ = integrate.quad(f, -14.0, 14.0, points=pts, epsabs=1e-300, epsrel=1e-12, limit=400)
    return val


def max_v(case):
    """Every family's rule is exact to ~1e-10 over the whole grid."""
    return np.inf


# --- ell is the exact expectation --------------------------------------------------------

@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("case", IDS)
def test_ell_matches_adaptive_quadrature(case):
    fam, Y, Mm, Vv, ss = grid(case)
    keep = Vv <= max_v(case)
    Y, Mm, Vv = Y[keep], Mm[keep], Vv[keep]
    rng = np.random.default_rng(0)
    for s in ss:
        got = fam.ell(Y, Mm, Vv, sarr(s, Y)).value
        pick = rng.choice(Y.size, size=36 // len(ss), replace=False)   # a random few: fast
        for i in pick:
            ref = quad_ell(fam, Y[i], Mm[i], Vv[i], s)
            assert got[i] == pytest.approx(ref, rel=1e-9, abs=1e-9), (Y[i], Mm[i], Vv[i], s)


def dense_ell(fam, y, m, v, s, panels=60):
    """E[log f] by composite 20-point Gauss-Legendre on panels of z in [-15, 15] (vectorised)."""
    x, w = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(-15.0, 15.0, panels + 1)
    half = 0.5 * np.diff(edges)
    z = ((edges[:-1] + half)[:, None] + half[:, None] * x).ravel()
    wz = (half[:, None] * w).ravel() * stats.norm.pdf(z)
    eta = m[:, None] + np.sqrt(v)[:, None] * z
    s2 = None if s is None else np.full(eta.shape, s)
    return fam.loglik(np.broadcast_to(y[:, None], eta.shape), eta, s2) @ wz


@pytest.mark.parametrize("case", IDS)
def test_ell_matches_dense_reference_on_full_grid(case):
    fam, Y, Mm, Vv, ss = grid(case)
    keep = Vv <= max_v(case)
    Y, Mm, Vv = Y[keep], Mm[keep], Vv[keep]
    for s in ss:
        got = fam.ell(Y, Mm, Vv, sarr(s, Y)).value
        panels = 300 if case == "zip" else 60                  # zip's corner is 1/9 wide in eta
        np.testing.assert_allclose(got, dense_ell(fam, Y, Mm, Vv, s, panels), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("case", IDS)
def test_ell_at_zero_variance_is_loglik(case):
    fam, Y, Mm, Vv, ss = grid(case, v=np.array([0.0]))
    for s in ss:
        e = fam.ell(Y, Mm, Vv, sarr(s, Y))
        np.testing.assert_allclose(e.value, fam.loglik(Y, Mm, sarr(s, Y)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in IDS if c not in ("zip", "beta")])   # h not concave
def test_ell_is_below_loglik_at_the_mean_for_concave_h(case):
    """Jensen: ell <= h(m) when h is concave in eta."""
    fam, Y, Mm, Vv, ss = grid(case)
    for s in ss:
        e = fam.ell(Y, Mm, Vv, sarr(s, Y))
        h = fam.loglik(Y, Mm, sarr(s, Y))
        assert np.all(e.value <= h + 1e-9 * np.maximum(1.0, np.abs(h)))


# --- derivatives ----------------------------------------------------------------------------

def fd(fun, x, h=1e-3):
    """Richardson-extrapolated central difference (error O(h^4)) and a noise estimate.

    Counts like 1e5 make the terms of ell ~ 1e6 while the derivatives are O(1),
    so a quotient carries ~eps * 1e6 / h of rounding noise. The spread of the
    quotients at four step sizes estimates it; a wrong derivative still fails,
    since the quotients then agree with each other, not with it.
    """
    mag = np.zeros(np.shape(fun(x)))

    def quotient(k):
        hi, lo = fun(x + k), fun(x - k)
        np.maximum(mag, np.maximum(np.abs(hi), np.abs(lo)), out=mag)
        return (hi - lo) / (2.0 * k)

    q = np.array([quotient(h / 2 ** i) for i in range(4)])
    floor = 8.0 * np.finfo(float).eps * mag / (h / 8)        # rounding of the function itself
    return (4.0 * q[1] - q[0]) / 3.0, q.max(0) - q.min(0) + floor


def close(a, b_noise, tol):
    b, noise = b_noise
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    bad = np.abs(a - b) > tol * scale + 2.0 * noise
    assert not bad.any(), (np.flatnonzero(bad)[:5], a[bad][:5], b[bad][:5])


DERIV_M = np.array([-30.0, -6.0, -1.0, 0.0, 0.6, 3.0, 9.0, 30.0])
# away from the variance bins' edges (a rule switch is a ~1e-11 step in ell)
DERIV_V = np.array([0.004, 0.03, 0.15, 0.4, 0.65, 0.9, 1.25, 3.0, 8.0])


@pytest.mark.parametrize("case", IDS)
def test_dm_dv_match_finite_differences(case):
    fam, Y, Mm, Vv, ss = grid(case, DERIV_M, DERIV_V)
    for s in ss:
        sa = sarr(s, Y)
        e = fam.ell(Y, Mm, Vv, sa)
        close(e.d_m, fd(lambda x: fam.ell(Y, x, Vv, sa).value, Mm), 1e-6)
        close(e.d_v, fd(lambda x: fam.ell(Y, Mm, x, sa).value, Vv), 1e-6)


@pytest.mark.parametrize("case", IDS)
def test_second_m_derivative_is_twice_dv(case):
    """d2 ell / dm2 = 2 d ell / dv (Price), which Newton steps in the engine rely on."""
    fam, Y, Mm, Vv, ss = grid(case, DERIV_M, DERIV_V)
    for s in ss:
        sa = sarr(s, Y)
        e = fam.ell(Y, Mm, Vv, sa)
        close(2.0 * e.d_v, fd(lambda x: fam.ell(Y, x, Vv, sa).d_m, Mm), 1e-6)


@pytest.mark.parametrize("case", [c for c in IDS if get_family(*CASES[c][:2]).has_dispersion])
def test_ds_dss_match_finite_differences(case):
    fam, Y, Mm, Vv, ss = grid(case, DERIV_M, DERIV_V)
    for s in ss:
        e = fam.ell(Y, Mm, Vv, sarr(s, Y), order=2)
        close(e.d_s, fd(lambda x: fam.ell(Y, Mm, Vv, np.full(Y.shape, x)).value, s), 1e-6)
        close(e.d_ss, fd(lambda x: fam.ell(Y, Mm, Vv, np.full(Y.shape, x)).d_s, s), 1e-6)


@pytest.mark.parametrize("case", IDS)
def test_ell_shapes_and_order(case):
    fam, ys, ss = make(case)
    y = np.tile(np.asarray(ys)[:3, None], (1, 4))
    m, v = np.zeros(y.shape), np.full(y.shape, 0.5)
    s = None if ss[0] is None else np.zeros(4)        # one dispersion per species (column)
    e1, e2 = fam.ell(y, m, v, s), fam.ell(y, m, v, s, order=2)
    for a in (e1.value, e1.d_m, e1.d_v):
        assert np.shape(a) == y.shape
    if fam.has_dispersion:
        assert e1.d_s.shape == y.shape and e1.d_ss is None and e2.d_ss.shape == y.shape
    else:
        assert e1.d_s is None and e2.d_s is None


# --- extremes stay finite and silent (RuntimeWarning from jsdm is an error here) -----------

@pytest.mark.parametrize("case", IDS)
def test_extremes_are_finite(case):
    fam, ys, ss = make(case)
    m = np.array([-700.0, -60.0, -30.0, 30.0, 60.0, 300.0])
    if fam.name in ("poisson", "negative_binomial", "gamma", "tweedie", "zip"):   # e^(+-eta) finite
        m = m[m < 300] if fam.name == "negative_binomial" else m[(m > -700) & (m < 300)]
    for v in (0.0, 1e-12, 20.0):
        for s in ss + [s for s in (-30.0, 30.0) if ss[0] is not None]:
            y = np.full(m.shape, ys[-1])
            e = fam.ell(y, m, np.full(m.shape, v), sarr(s, m), order=2)
            for a in (e.value, e.d_m, e.d_v, e.d_s, e.d_ss):
                if a is not None and not (fam.name == "poisson" and a is e.value):
                    assert np.all(np.isfinite(a) | (a == -np.inf)), (case, v, s, a)


def test_negative_binomial_poisson_limit():
    nb, po = NegativeBinomial(), Poisson()
    y = np.array([0.0, 3.0, 40.0, 1e5])
    m, v = np.log(np.array([0.5, 3.0, 35.0, 1.1e5])), np.array([0.0, 0.3, 1.0, 0.01])
    e_nb, e_po = nb.ell(y, m, v, np.full(4, -45.0), order=2), po.ell(y, m, v)   # phi = 3e-20
    np.testing.assert_allclose(e_nb.value, e_po.value, rtol=1e-12)
    np.testing.assert_allclose(e_nb.d_m, e_po.d_m, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(e_nb.d_v, e_po.d_v, rtol=1e-9)
    np.testing.assert_allclose(e_nb.d_s, 0.0, atol=1e-9)
    np.testing.assert_allclose(nb.loglik(y, m, np.full(4, -45.0)), po.loglik(y, m), rtol=1e-12)


# --- exact log-densities, CDFs, moments against scipy.stats ---------------------------------

def scipy_dist(fam, eta, s, n=1):
    if fam.name == "poisson":
        return stats.poisson(np.exp(eta))
    if fam.name == "negative_binomial":
        phi = np.exp(s)
        return stats.nbinom(1.0 / phi, 1.0 / (1.0 + phi * np.exp(eta)))
    if fam.name == "gaussian":
        return stats.norm(eta, np.exp(s))
    if fam.name == "gamma":
        return stats.gamma(np.exp(-s), scale=np.exp(eta + s))
    if fam.name == "tweedie":
        return CompoundPoissonGamma(np.exp(eta), np.exp(s), fam.power)
    if fam.name == "zip":
        return ZeroInflated(stats.poisson(np.exp(eta)), special.expit(s))
    if fam.name == "beta":
        return stats.beta(np.exp(s) * special.expit(eta), np.exp(s) * special.expit(-eta))
    p = {"logit": stats.logistic.cdf, "probit": stats.norm.cdf,
         "cloglog": lambda e: 1.0 - np.exp(-np.exp(e))}[fam.link](eta)
    return stats.binom(n, p)


class ZeroInflated:
    """pi * [y = 0] + (1 - pi) * base."""

    def __init__(self, base, pi):
        self.base, self.pi = base, pi

    def logpmf(self, y):
        return np.where(y == 0, np.log(self.pi + (1 - self.pi) * self.base.pmf(0)),
                        np.log1p(-self.pi) + self.base.logpmf(y))

    def cdf(self, y):
        return np.where(y < 0, 0.0, self.pi + (1 - self.pi) * self.base.cdf(y))


class CompoundPoissonGamma:
    """Tweedie (1 < p < 2) as sum over N ~ Poisson(lam) of N gamma(beta, gam) jumps."""

    def __init__(self, mu, phi, p):
        self.lam = mu ** (2 - p) / (phi * (2 - p))
        self.shape, self.scale = (2 - p) / (p - 1), phi * (p - 1) * mu ** (p - 1)

    N = np.arange(1, 3000)[:, None]

    def logpdf(self, y):
        terms = stats.poisson.logpmf(self.N, self.lam) + stats.gamma.logpdf(
            np.where(y == 0, 1.0, y), self.N * self.shape, scale=self.scale)
        return np.where(y == 0, -self.lam, special.logsumexp(terms, axis=0))

    def cdf(self, y):
        terms = stats.poisson.pmf(self.N, self.lam) * stats.gamma.cdf(y, self.N * self.shape,
                                                                       scale=self.scale)
        return np.exp(-self.lam) + terms.sum(0)


@pytest.mark.parametrize("case", IDS)
def test_loglik_and_cdf_match_scipy(case):
    fam, ys, ss = make(case)
    eta = np.array([-3.0, -0.5, 0.0, 1.2, 2.0])
    for s in ss:
        for y in ys[:4]:
            d = scipy_dist(fam, eta, s)
            yy = np.full(eta.shape, y)
            np.testing.assert_allclose(fam.loglik(yy, eta, sarr(s, eta)),
                                       d.logpmf(yy) if fam.discrete else d.logpdf(yy),
                                       rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(fam.cdf(yy, eta, sarr(s, eta)), d.cdf(yy), rtol=1e-9, atol=1e-12)
            lower = d.cdf(yy - 1) if fam.discrete else np.where(yy > 0, d.cdf(yy), 0.0) \
                if fam.name == "tweedie" else d.cdf(yy)
            np.testing.assert_allclose(fam.cdf_lower(yy, eta, sarr(s, eta)), lower, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binomial_with_trials(link):
    fam = Binomial(link)
    n = np.array([[1.0, 5.0, 20.0]])
    y = np.array([[1.0, 2.0, 20.0]])
    eta = np.array([[0.3, -1.0, 2.0]])
    d = scipy_dist(fam, eta, None, n)
    np.testing.assert_allclose(fam.loglik(y, eta, trials=n), d.logpmf(y), rtol=1e-10)
    np.testing.assert_allclose(fam.cdf(y, eta, trials=n), d.cdf(y), rtol=1e-10)
    np.testing.assert_allclose(fam.mean(eta, trials=n), d.mean(), rtol=1e-12)
    for v in (0.0, 0.3, 2.0):
        got = fam.ell(y, eta, np.full(y.shape, v), trials=n).value.ravel()
        ref = [quad_ell_trials(fam, y.ravel()[i], eta.ravel()[i], v, n.ravel()[i]) for i in range(3)]
        np.testing.assert_allclose(got, ref, rtol=1e-9)


def quad_ell_trials(fam, y, m, v, n):
    if v == 0:
        return float(fam.loglik(np.array([y]), np.array([m]), trials=np.array([n]))[0])
    sd = np.sqrt(v)

    def f(z):
        return float(fam.loglik(np.array([y]), np.array([m + sd * z]), trials=np.array([n]))[0]) \
            * stats.norm.pdf(z)
    return integrate.quad(f, -14, 14, epsabs=1e-300, epsrel=1e-12, limit=400)[0]


@pytest.mark.parametrize("case", IDS)
def test_sample_moments_match_mean_and_variance(case):
    fam, ys, ss = make(case)
    eta = np.array([-1.0, 0.0, 0.5]) if fam.name == "binomial" else np.array([-1.0, 0.5, 2.0])
    s = None if ss[0] is None else np.array([-1.0, 0.0, 0.7])
    n_draw = 40000
    draws = fam.sample(np.broadcast_to(eta, (n_draw, 3)), s, rng=123)
    assert draws.shape == (n_draw, 3)
    mu = fam.mean(eta, s=s)
    var = fam.variance(mu, s)
    se_mean = np.sqrt(var / n_draw)
    assert np.all(np.abs(draws.mean(0) - mu) < 5 * se_mean)
    np.testing.assert_allclose(draws.var(0), var, rtol=0.08)
    again = fam.sample(np.broadcast_to(eta, (n_draw, 3)), s, rng=123)
    np.testing.assert_array_equal(draws, again)
    fam.check_y(draws)


# --- validation, registry, starting values -----------------------------------------------

@pytest.mark.parametrize("case,bad,needle", [
    ("poisson", [1.0, -1.0], "non-negative"),
    ("nb", [2.0, 0.5], "whole-number"),
    ("binomial-logit", [0.0, 2.0], "0/1"),
    ("binomial-probit", [0.0, 0.5], "0/1"),
    ("gaussian", [0.0, np.inf], "finite"),
    ("gamma", [1.0, 0.0], "strictly positive"),
    ("tweedie", [0.0, -1.0], "non-negative"),
    ("zip", [3.0, 2.5], "whole-number"),
    ("beta", [0.5, 1.0], "strictly between 0 and 1"),
])
def test_check_y_rejects_bad_values(case, bad, needle):
    fam, _, _ = make(case)
    with pytest.raises(JSDMError, match=needle) as err:
        fam.check_y(np.array(bad))
    assert str(bad[1])[:3] in str(err.value)          # the message echoes the bad value
    fam.check_y(np.array([bad[0], np.nan]))             # NaN (missing) is allowed


def test_check_y_binomial_trials():
    fam = Binomial()
    fam.check_y(np.array([[0.0, 3.0]]), trials=np.array([[2.0, 5.0]]))
    with pytest.raises(JSDMError, match="between 0 and trials"):
        fam.check_y(np.array([[3.0, 3.0]]), trials=np.array([[2.0, 5.0]]))
    with pytest.raises(JSDMError, match="trials must be positive"):
        fam.check_y(np.array([[0.0]]), trials=np.array([[0.0]]))


@pytest.mark.parametrize("key,cls,link", [
    ("poisson", Poisson, "log"), ("negative_binomial", NegativeBinomial, "log"),
    ("nb", NegativeBinomial, "log"), ("negbin", NegativeBinomial, "log"),
    ("negative.binomial", NegativeBinomial, "log"), ("Negative-Binomial", NegativeBinomial, "log"),
    ("binomial", Binomial, "logit"), ("bernoulli", Binomial, "logit"),
    ("gaussian", Gaussian, "identity"), ("normal", Gaussian, "identity"), ("Gamma", Gamma, "log"),
    ("tweedie", Tweedie, "log"), ("zip", ZeroInflatedPoisson, "log"),
    ("zero-inflated-poisson", ZeroInflatedPoisson, "log"), ("beta", Beta, "logit"),
])
def test_get_family_by_name_and_alias(key, cls, link):
    fam = get_family(key)
    assert type(fam) is cls and fam.link == link


def test_get_family_instance_class_and_link():
    nb = NegativeBinomial()
    assert get_family(nb) is nb
    assert isinstance(get_family(Gaussian), Gaussian)
    assert get_family("binomial", link="probit").link == "probit"
    assert get_family(Binomial(), link="cloglog").link == "cloglog"


def test_get_family_errors_list_valid_choices():
    with pytest.raises(JSDMError, match="valid families: .*binomial.*gaussian.*negative_binomial"):
        get_family("weibull")
    with pytest.raises(JSDMError, match="valid links: logit, probit, cloglog"):
        get_family("binomial", link="log")


def test_tweedie_power():
    assert Tweedie(power=1.7).power == 1.7 and get_family("tweedie").power == 1.5
    with pytest.raises(JSDMError, match="strictly between 1 and 2"):
        Tweedie(power=2.0)


def test_tweedie_series_switch_is_seamless():
    """Direct sum and the Euler-Maclaurin integral agree where the rule switches."""
    fam = Tweedie(power=1.3)
    y = np.linspace(20.0, 400.0, 400)
    ll = fam.loglik(y, np.full(y.shape, 3.0), np.full(y.shape, -2.5))
    ref = CompoundPoissonGamma(np.exp(3.0), np.exp(-2.5), 1.3).logpdf(y)
    np.testing.assert_allclose(ll, ref, rtol=1e-10)


def test_link_residual_variances():
    assert Binomial("probit").link_residual_variance == 1.0
    assert Binomial("logit").link_residual_variance == pytest.approx(np.pi ** 2 / 3)
    assert Binomial("cloglog").link_residual_variance == pytest.approx(np.pi ** 2 / 6)
    assert Poisson().link_residual_variance == 0.0


@pytest.mark.parametrize("cls,true_disp", [(NegativeBinomial, np.array([0.2, 1.5])),
                                          (Gaussian, np.array([0.3, 4.0])),
                                          (Gamma, np.array([0.1, 2.0])),
                                          (Tweedie, np.array([0.5, 2.0])),
                                          (ZeroInflatedPoisson, np.array([0.2, 0.5])),
                                          (Beta, np.array([5.0, 50.0]))])
def test_dispersion_start_recovers_simulated_dispersion(cls, true_disp):
    fam = cls()
    s = fam.dispersion_param(true_disp)
    eta = np.broadcast_to(np.array([1.5, 2.5]), (4000, 2))
    y = fam.sample(eta, s, rng=7)
    y[::50, 0] = np.nan                                   # missing cells are skipped
    got = fam.dispersion(fam.dispersion_start(y, fam.mean(eta)))
    np.testing.assert_allclose(got, true_disp, rtol=0.15)
    np.testing.assert_allclose(fam.dispersion(s), true_disp)


def test_n_dispersion():
    assert NegativeBinomial().n_dispersion(np.ones((3, 2))) is None
    y = np.array([[0.0, 4.0], [2.0, np.nan], [1.0, 3.0]])
    assert Ordinal().n_dispersion(y) == 3                        # unbound: K - 2, K = 1 + max
    with pytest.warns(DataWarning, match=r"column 1 \(uses 3-4\)"):
        bound = Ordinal().prepare(y)                             # species 0 uses 0-2: q = 1
    assert bound.n_dispersion(y) == 1 and Ordinal().categories_used is None
    with pytest.warns(DataWarning, match="no species shows categories 3, 4, 5 of 0..6"):
        common = Ordinal(cutpoints="common").prepare(np.array([[0.0, 6.0], [2.0, 1.0]]))
    assert common.n_dispersion(None) == 2 and common.categories_used.shape == (1, 7)
    with pytest.raises(JSDMError, match="at least 3 categories"):
        Ordinal().n_dispersion(np.array([[0.0], [1.0]]))
    with pytest.raises(JSDMError, match="cutpoints must be one of"):
        Ordinal(cutpoints="shared")


def test_dispersion_start_none_without_dispersion():
    assert Poisson().dispersion_start(np.ones((3, 2)), np.ones((3, 2))) is None
    assert Family.dispersion_start(Binomial(), np.ones((3, 2)), np.ones((3, 2))) is None


# --- ordinal: a matrix of nuisance parameters per species ----------------------------------

ORD_LINKS = ["probit", "logit"]


def ordinal_grid(K=4):
    ys = np.arange(K, dtype=float)
    Y, Mm, Vv = np.meshgrid(ys, DERIV_M, DERIV_V, indexing="ij")
    Y, Mm, Vv = Y.ravel(), Mm.ravel(), Vv.ravel()
    gaps = np.tile(np.array([[0.3, -0.5]]), (Y.size, 1))   # one "species" per cell: s is (N, K-2)
    return Y, Mm, Vv, gaps


@pytest.mark.parametrize("link", ORD_LINKS)
def test_ordinal_ell_matches_quadrature(link):
    fam = Ordinal(link)
    Y, Mm, Vv, c = ordinal_grid()
    Vv = np.where(Vv > 5, 5.0, Vv)
    got = fam.ell(Y, Mm, Vv, c).value
    sd = np.sqrt(Vv)
    x, w = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(-15.0, 15.0, 61)
    half = 0.5 * np.diff(edges)
    z = ((edges[:-1] + half)[:, None] + half[:, None] * x).ravel()
    wz = (half[:, None] * w).ravel() * stats.norm.pdf(z)
    eta = Mm[:, None] + sd[:, None] * z
    dense = np.array([fam.loglik(np.full(z.shape, Y[i]), eta[i], np.tile(c[i], (z.size, 1))) @ wz
                      for i in range(Y.size)])
    np.testing.assert_allclose(got, dense, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("link", ORD_LINKS)
def test_ordinal_derivatives_match_finite_differences(link):
    fam = Ordinal(link)
    Y, Mm, Vv, c = ordinal_grid()
    e = fam.ell(Y, Mm, Vv, c, order=2)
    assert e.d_s.shape == (Y.size, 2) and e.d_ss.shape == (Y.size, 2, 2)
    close(e.d_m, fd(lambda x: fam.ell(Y, x, Vv, c).value, Mm), 1e-6)
    close(e.d_v, fd(lambda x: fam.ell(Y, Mm, x, c).value, Vv), 1e-6)
    close(2.0 * e.d_v, fd(lambda x: fam.ell(Y, x, Vv, c).d_m, Mm), 1e-6)
    for j in range(2):
        def at(x, j=j, what="value"):
            cc = c.copy()
            cc[:, j] = x
            return getattr(fam.ell(Y, Mm, Vv, cc, order=1), what)
        close(e.d_s[:, j], fd(at, c[:, j]), 1e-6)
        close(e.d_ss[:, :, j], fd(lambda x: at(x, what="d_s"), c[:, j]), 1e-6)
        np.testing.assert_allclose(e.d_ss[:, j, :], e.d_ss[:, :, j])


@pytest.mark.parametrize("link", ORD_LINKS)
def test_ordinal_probabilities_cdf_and_samples(link):
    fam = Ordinal(link)
    dist = stats.norm if link == "probit" else stats.logistic
    s = np.array([[0.2, -0.4], [1.0, 0.5]])                 # two species, K = 4
    tau = fam.cutpoints(s)
    np.testing.assert_allclose(tau[:, 0], 0.0)
    assert np.all(np.diff(tau, axis=1) > 0)
    eta = np.array([[-0.5, 1.5], [2.0, -3.0], [0.0, 40.0]])
    p = fam.probs(eta, s)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    for k in range(4):
        y = np.full(eta.shape, float(k))
        b = tau[np.arange(2), k] - eta if k < 3 else np.full(eta.shape, np.inf)
        a = tau[np.arange(2), k - 1] - eta if k > 0 else np.full(eta.shape, -np.inf)
        up, lo = dist.cdf(b), dist.cdf(a)
        ref = np.where(a > 0, dist.sf(a) - dist.sf(b), up - lo)      # no cancellation near 1
        np.testing.assert_allclose(np.exp(fam.loglik(y, eta, s)), ref, rtol=1e-9, atol=1e-300)
        np.testing.assert_allclose(fam.cdf(y, eta, s), up, rtol=1e-12)
        np.testing.assert_allclose(fam.cdf_lower(y, eta, s), lo, rtol=1e-12)
    draws = fam.sample(np.broadcast_to(eta[0], (20000, 2)), s, rng=5)
    freq = np.stack([(draws == k).mean(0) for k in range(4)], axis=-1)
    np.testing.assert_allclose(freq, p[0], atol=0.015)
    np.testing.assert_allclose(fam.mean(eta, s=s), p @ np.arange(4.0))


def test_ordinal_extremes_validation_and_starts():
    fam = get_family("ordinal")
    assert fam.link == "probit" and get_family("ordered", link="logit").link == "logit"
    y = np.array([[0.0, 3.0], [3.0, 0.0]])
    s = np.zeros((2, 2))
    for m in (-700.0, -40.0, 40.0, 700.0):
        for v in (0.0, 1e-9, 20.0):
            e = fam.ell(y, np.full(y.shape, m), np.full(y.shape, v), s, order=2)
            for a in (e.value, e.d_m, e.d_v, e.d_s, e.d_ss):
                assert np.all(np.isfinite(a))
    with pytest.raises(JSDMError, match="0, 1, ..., K-1"):
        fam.check_y(np.array([0.0, 1.5]))
    with pytest.raises(JSDMError, match=r"\(m, K-2\)"):
        fam.ell(y, y, y, np.zeros(2))
    sim = fam.sample(np.zeros((3000, 3)), np.tile(np.log([1.0, 0.5]), (3, 1)), rng=2)
    tau = fam.cutpoints(fam.dispersion_start(sim, None))
    np.testing.assert_allclose(tau, np.tile([0.0, 1.0, 1.5], (3, 1)), atol=0.12)
    np.testing.assert_allclose(fam.dispersion_param(fam.dispersion(s)), s, atol=1e-12)


# --- the base class's generic quadrature ell (for families that give only logpdf_eta) -------

class _QuadNB(Family):
    """Negative binomial through logpdf_eta only, to check the inherited quadrature ell."""

    name = "quad_nb"
    links = ("log",)
    default_link = "log"
    has_dispersion = True

    def logpdf_eta(self, y, eta, s=None, trials=None, order=1):
        r = np.exp(-s)
        nb = NegativeBinomial()
        p = special.expit(eta + s)
        h = nb.loglik(y, eta, s)
        h1 = y - (y + r) * p
        h2 = -(y + r) * p * (1 - p)
        hs = y - r * (special.digamma(y + r) - special.digamma(r)) + r * np.logaddexp(0, eta + s) \
            - (y + r) * p
        out = [h, h1, h2, hs]
        if order >= 2:
            dpsi = special.digamma(y + r) - special.digamma(r)
            out.append(r * dpsi + r * r * (special.polygamma(1, y + r) - special.polygamma(1, r))
                       - r * np.logaddexp(0, eta + s) + 2 * r * p - (y + r) * p * (1 - p))
        return out


def test_base_quadrature_ell_matches_closed_form_family():
    fam, ref = _QuadNB(), NegativeBinomial()
    Y, Mm, Vv = np.meshgrid([0.0, 3.0, 40.0], [-3.0, 0.0, 2.0, 5.0], [0.0, 0.02, 0.3, 0.8, 3.0, 12.0],
                            indexing="ij")
    Y, Mm, Vv = Y.ravel(), Mm.ravel(), Vv.ravel()
    s = np.full(Y.shape, 0.4)
    got, want = fam.ell(Y, Mm, Vv, s, order=2), ref.ell(Y, Mm, Vv, s, order=2)
    for a, b in ((got.value, want.value), (got.d_m, want.d_m), (got.d_v, want.d_v), (got.d_s, want.d_s),
                 (got.d_ss, want.d_ss)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert fam.ell(Y, Mm, Vv, s).d_ss is None


@pytest.mark.parametrize("case", IDS)
def test_ell_arrays_are_writeable(case):
    """The engine may update ELL arrays in place (e.g. zero the weights of missing cells)."""
    fam, ys, ss = make(case)
    y = np.tile(np.asarray(ys)[:2, None], (1, 3))
    s = None if ss[0] is None else np.zeros(3)
    for v in (0.0, 3.0):
        e = fam.ell(y, np.zeros(y.shape), np.full(y.shape, v), s, order=2)
        for a in (e.value, e.d_m, e.d_v, e.d_s, e.d_ss):
            assert a is None or (a.flags.writeable and a.shape == y.shape)


@pytest.mark.parametrize("case", IDS)
def test_non_finite_moments_give_nan_quietly(case):
    """A diverged optimiser step (NaN/inf in m or v) yields NaN, never garbage or warnings."""
    fam, ys, ss = make(case)
    y = np.full((1, 4), ys[1])
    s = None if ss[0] is None else np.zeros(4)
    m = np.array([[0.0, np.nan, 1.0, 0.5]])
    v = np.array([[0.3, 0.3, np.nan, 0.2]])
    e = fam.ell(y, m, v, s)
    assert np.isnan(e.value[0, 1]) and np.isnan(e.value[0, 2])
    assert np.all(np.isfinite(e.value[0, [0, 3]])) and np.all(np.isfinite(e.d_m[0, [0, 3]]))


def test_unknown_family_suggests_the_closest_name():
    with pytest.raises(JSDMError, match="did you mean 'negative_binomial'"):
        get_family("negbinom")
    with pytest.raises(JSDMError) as info:
        get_family("xyz")
    assert "did you mean" not in str(info.value) and "poisson" in str(info.value)


def test_negative_binomial_cached_pair_terms_equal_the_direct_ones():
    """The y-only terms computed per distinct (count, species) pair equal the per-cell ones."""
    from jsdm.families.negative_binomial import NegativeBinomial

    fam = NegativeBinomial()
    rng = np.random.default_rng(4)
    y = rng.negative_binomial(0.7, 0.2, size=(300, 6)).astype(float)
    y[:, 5] = 0.0                                     # an all-zero species
    y[0, 0] = 12345.0                                 # a huge count
    m = rng.normal(size=y.shape)
    v = rng.uniform(0.0, 0.5, size=y.shape)
    s = np.array([-1.0, 0.5, -20.0, -6.0, 2.0, 0.0])  # includes near-Poisson (asymptotic) r
    cache = {}
    for order in (1, 2):
        for shift in (0.0, 0.3):                      # a new s after the index was built
            direct = fam.ell(y, m, v, s + shift, order=order)
            cached = fam.ell(y, m, v, s + shift, order=order, cache=cache)
            for key in ("value", "d_m", "d_v", "d_s", "d_ss"):
                a, b = getattr(direct, key), getattr(cached, key)
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=key)
    assert cache["pairs"] is not False and cache["pairs"][2].size < np.count_nonzero(y)
    frac = np.array(y)
    frac[1, 1] = 2.5                                  # not whole: the per-cell path
    c2 = {}
    np.testing.assert_array_equal(fam.ell(frac, m, v, s, cache=c2).value,
                                  fam.ell(frac, m, v, s).value)
    assert c2["pairs"] is False


def test_observation_variance_is_nakagawas_distribution_specific_variance():
    from jsdm.families import get_family

    mu = np.array([0.05, 1.0, 20.0])
    np.testing.assert_allclose(get_family("poisson").observation_variance(mu), np.log1p(1 / mu))
    s = np.log(0.7)
    np.testing.assert_allclose(get_family("nb").observation_variance(mu, s), np.log1p(1 / mu + 0.7))
    np.testing.assert_allclose(get_family("gamma").observation_variance(mu, s), np.log1p(0.7))
    np.testing.assert_allclose(get_family("gaussian").observation_variance(mu, np.log(2.0)), 4.0)
    np.testing.assert_allclose(Binomial("logit").observation_variance(mu), np.pi ** 2 / 3)
    np.testing.assert_allclose(Binomial("probit").observation_variance(mu), 1.0)
    p = np.array([0.2, 0.5])
    np.testing.assert_allclose(get_family("beta").observation_variance(p, np.log(9.0)),
                               (p * (1 - p) / 10.0) / (p * (1 - p)) ** 2)


@pytest.mark.parametrize("link", ORD_LINKS)
def test_ordinal_ell_at_huge_variances_is_accurate_and_bounded(link):
    """Variances an optimiser's trial step can reach (sd up to 1e4): the panel count is capped
    (it asked for ~1.5 million panels per cell before, and a fit ran out of memory), and the
    expectation still matches a dense rule in z (2000 panels of 20 nodes on +-12 sd): to 1e-7
    relative. Measured: probit within 1e-8 throughout; logit 1.8e-8 at sd = 1e4, where its
    log-probability's kink (|u| beyond the cut points) falls inside panels of both rules."""
    import tracemalloc

    fam = Ordinal(link)
    Y = np.repeat(np.arange(4.0), 3)
    Mm = np.tile(np.array([-50.0, 0.0, 40.0]), 4)
    for v in (1e4, 1e6, 1e8):
        Vv = np.full(Y.shape, v)
        c = np.tile(np.array([[0.3, -0.5]]), (Y.size, 1))
        tracemalloc.start()
        got = fam.ell(Y, Mm, Vv, c).value
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50e6
        x, w = np.polynomial.legendre.leggauss(20)
        edges = np.linspace(-12.0, 12.0, 2001)
        half = 0.5 * np.diff(edges)
        z = ((edges[:-1] + half)[:, None] + half[:, None] * x).ravel()
        wz = (half[:, None] * w).ravel() * stats.norm.pdf(z)
        eta = Mm[:, None] + np.sqrt(v) * z
        dense = np.array([fam.loglik(np.full(z.shape, Y[i]), eta[i], np.tile(c[i], (z.size, 1)))
                          @ wz for i in range(Y.size)])
        np.testing.assert_allclose(got, dense, rtol=1e-7)


def test_quadrature_threads_keep_the_callers_error_state():
    """numpy's error state is per thread: the quadrature pool's workers take the caller's, so
    an overflow the caller silenced does not warn from a worker thread."""
    import warnings

    from jsdm._numerics import set_num_threads

    fam = Ordinal("probit")
    n = 200_000
    Y = np.zeros(n)
    Mm = np.full(n, 1e200)
    Vv = np.full(n, 4.0)
    c = np.tile(np.array([[0.3, -0.5]]), (n, 1))
    set_num_threads(2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            with np.errstate(all="ignore"):
                fam.ell(Y, Mm, Vv, c)
    finally:
        set_num_threads()
