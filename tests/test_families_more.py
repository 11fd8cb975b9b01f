"""The families of issue 16 (and any family with a vector of nuisance parameters per species).

Each family is checked against computations that do not use its own code:

- ``ell`` against a dense composite Gauss-Legendre integral of a log-density
  written here with scipy.stats (``REF``), over a grid of y, m, v and s;
- the derivatives d_m, d_v, d_s, d_ss against Richardson-extrapolated central
  differences of ``ell`` itself, and Price's identity d2 ell/dm2 = 2 d ell/dv;
- ``loglik`` against the scipy log-density, ``cdf`` against sums (or
  integrals) of the scipy density;
- random draws: their mean, variance and zero share against the scipy
  distribution's, and reproducibility from a seed;
- ``check_y``: a clear error naming the bad value; dispersion round trips.
"""
import numpy as np
import pytest
from scipy import integrate, special, stats

from jsdm.exceptions import JSDMError
from jsdm.families import get_family

from test_engine_bound import nb_logpmf
from test_families import CompoundPoissonGamma, close, fd


# --- independent log-densities (scipy.stats), by family -------------------------------------
def ref_zinb(y, eta, s, n):
    lpi, l1pi = special.log_expit(s[..., 0]), special.log_expit(-s[..., 0])
    nb = nb_logpmf(y, eta, np.exp(s[..., 1]))
    return np.where(y == 0, np.logaddexp(lpi, l1pi + nb), l1pi + nb)


def _lgamma_diff(y, r):
    """lgamma(y + r) - lgamma(r), by a sum of logs where r is huge (no cancellation)."""
    y, r = np.broadcast_arrays(np.asarray(y, float), np.asarray(r, float))
    big = r > 1e6
    out = special.gammaln(y + np.where(big, 1.0, r)) - special.gammaln(np.where(big, 1.0, r))
    if big.any():
        yb, rb = y[big], r[big]
        acc = np.zeros(yb.shape)
        for k in range(int(yb.max())):
            acc += np.where(k < yb, np.log(rb + k), 0.0)
        out[big] = acc
    return out


def ref_nb1(y, eta, s, n):
    r = np.exp(eta - s)
    return (_lgamma_diff(y, r) - special.gammaln(y + 1.0) - r * np.logaddexp(0, s)
            - y * np.logaddexp(0, -s))


def _log1mexp(x):
    """log(1 - exp(x)) for x <= 0."""
    return np.where(x > -0.693, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def ref_tpois(y, eta, s, n):
    lam = np.exp(eta)
    with np.errstate(divide="ignore"):
        return np.where(y >= 1, stats.poisson.logpmf(y, lam) - _log1mexp(-lam), -np.inf)


def ref_tnb(y, eta, s, n):
    phi = np.exp(s)
    with np.errstate(divide="ignore"):
        return np.where(y >= 1, nb_logpmf(y, eta, phi) - _log1mexp(nb_logpmf(0.0, eta, phi)), -np.inf)


def ref_hpois(y, eta, s, n):
    return np.where(y > 0, special.log_expit(s) + ref_tpois(y, eta, None, n), special.log_expit(-s))


def ref_hnb(y, eta, s, n):
    a = s[..., 0]
    return np.where(y > 0, special.log_expit(a) + ref_tnb(y, eta, s[..., 1], n), special.log_expit(-a))


def ref_expon(y, eta, s, n):
    return stats.expon.logpdf(y, scale=np.exp(eta))


REF = {"zinb": ref_zinb, "nb1": ref_nb1, "truncated_poisson": ref_tpois, "truncated_nb": ref_tnb,
       "hurdle_poisson": ref_hpois, "hurdle_nb": ref_hnb, "exponential": ref_expon}

def ref_ordbeta(y, eta, s, n):
    k0, k1, phi = s[..., 0], s[..., 0] + np.exp(s[..., 1]), np.exp(s[..., 2])
    p0, p1 = special.log_expit(k0 - eta), special.log_expit(eta - k1)
    # expit(a) - expit(b) = expit(a) expit(-b) (1 - e^(b - a)): no cancellation in the tails
    pmid = special.log_expit(eta - k0) + special.log_expit(k1 - eta) + np.log(-np.expm1(-(k1 - k0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        dens = stats.beta.logpdf(np.clip(y, 1e-300, 1 - 1e-16), phi * special.expit(eta),
                                 phi * special.expit(-eta))
    return np.where(y <= 0, p0, np.where(y >= 1, p1, pmid + dens))


REF["ordered_beta"] = ref_ordbeta


def ref_betah(y, eta, s, n):
    a, phi = s[..., 0], np.exp(s[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        dens = stats.beta.logpdf(np.where(y > 0, y, 0.5), phi * special.expit(eta),
                                 phi * special.expit(-eta))
    return np.where(y > 0, special.log_expit(a) + dens, special.log_expit(-a))


REF["beta_hurdle"] = ref_betah


def ref_betabinom(y, eta, s, n):
    phi = np.exp(s)
    return stats.betabinom.logpmf(y, n, phi * special.expit(eta), phi * special.expit(-eta))


REF["beta_binomial"] = ref_betabinom


def ref_tweedie_free(y, eta, s, n):
    """Compound Poisson-gamma log-density (test_families.CompoundPoissonGamma), cell by cell."""
    y, eta = np.broadcast_arrays(np.asarray(y, float), np.asarray(eta, float))
    s = np.broadcast_to(np.asarray(s, float), y.shape + (2,))
    out = np.empty(y.shape)
    for idx in np.ndindex(y.shape):
        p = 1.0 + special.expit(s[idx][1])
        d = CompoundPoissonGamma(np.exp(eta[idx]), np.exp(s[idx][0]), p)
        out[idx] = d.logpdf(np.array([y[idx]]))[0]
    return out


REF["tweedie_power"] = ref_tweedie_free

#: continuous families: support of the density part, and the point masses {y: log P(y)}
SUPPORT = {"exponential": (0.0, np.inf), "ordered_beta": (0.0, 1.0), "beta_hurdle": (0.0, 1.0),
           "tweedie_power": (0.0, np.inf)}
ATOMS = {"ordered_beta": lambda e, s: {0.0: float(ref_ordbeta(np.array(0.0), e, s, None)),
                                       1.0: float(ref_ordbeta(np.array(1.0), e, s, None))},
         "beta_hurdle": lambda e, s: {0.0: float(ref_betah(np.array(0.0), e, s, None))},
         "tweedie_power": lambda e, s: {0.0: float(ref_tweedie_free(np.array(0.0), e, s, None))}}


def ref_mean_var(case, eta, s, n=None):
    """Mean, variance and P(y = 0) of y from the reference density: sums over 0..3999 for counts,
    integrals (scipy.integrate.quad) plus point masses for continuous families."""
    if case not in SUPPORT:
        ks = np.arange(0, 4000.0)[:, None]
        p = np.exp(REF[case](ks, np.broadcast_to(eta, (ks.size,) + np.shape(eta)), s, n))
        mean = (ks * p).sum(0)
        return mean, (ks * ks * p).sum(0) - mean ** 2, p[0]
    lo, hi = SUPPORT[case]
    out = np.zeros((3, np.size(eta)))
    for j, e in enumerate(np.ravel(eta)):
        sj = None if s is None else np.asarray(s)[j]
        nj = None if n is None else np.asarray(n)[j]

        def dens(y, k):
            return y ** k * np.exp(REF[case](np.array([y]), np.array([e]), sj, nj)[0])
        mom = [integrate.quad(dens, lo, hi, args=(k,), epsabs=1e-13, limit=200)[0] for k in (1, 2)]
        for y0, logp in ATOMS.get(case, lambda e, s: {})(e, sj).items():
            mom = [mom[0] + y0 * np.exp(logp), mom[1] + y0 * y0 * np.exp(logp)]
            if y0 == 0:
                out[2, j] = np.exp(logp)
        out[0, j], out[1, j] = mom[0], mom[1] - mom[0] ** 2
    return out[0], out[1], out[2]


# (family name, constructor kwargs, y values, nuisance values s (one per row), trials, panels)
CASES = {
    "zinb": ("zinb", {}, [0.0, 1.0, 7.0, 250.0],
             [(-9.0, -12.0), (-9.0, 0.5), (-2.0, -2.0), (0.0, 6.0), (3.0, 0.5), (-4.0, 2.0)], None, 300),
    "nb1": ("nb1", {}, [0.0, 1.0, 7.0, 250.0], [-12.0, -2.0, 0.5, 6.0], None, 60),
    "truncated_poisson": ("truncated_poisson", {}, [1.0, 2.0, 7.0, 250.0], [None], None, 60),
    "truncated_nb": ("truncated_nb", {}, [1.0, 2.0, 7.0, 250.0], [-12.0, -2.0, 0.5, 6.0], None, 60),
    "hurdle_poisson": ("hurdle_poisson", {}, [0.0, 1.0, 7.0, 250.0], [-6.0, -0.5, 2.0, 9.0], None, 60),
    "hurdle_nb": ("hurdle_nb", {}, [0.0, 1.0, 7.0, 250.0],
                  [(-6.0, -12.0), (-0.5, -2.0), (2.0, 0.5), (9.0, 6.0), (0.0, 3.0)], None, 60),
    "exponential": ("exponential", {}, [0.0, 1e-3, 0.4, 3.0, 250.0], [None], None, 60),
    "ordered_beta": ("ordered_beta", {}, [0.0, 1e-4, 0.2, 0.7, 0.9999, 1.0],
                     [(-1.0, 0.5, 1.0), (0.5, -2.0, 6.0), (-3.0, 1.5, -0.5), (2.0, -6.0, 3.0)], None, 60),
    "beta_hurdle": ("beta_hurdle", {}, [0.0, 1e-4, 0.2, 0.7, 0.9999],
                    [(-6.0, -0.5), (0.5, 1.0), (3.0, 6.0), (-1.0, 3.0)], None, 60),
    "beta_binomial": ("beta_binomial", {}, [0.0, 1.0, 4.0, 8.0], [-1.0, 1.0, 3.0, 6.0], 8, 60),
    # power estimated: s = (log phi, logit(p - 1)); ell checked against the fixed-power family
    "tweedie_power": ("tweedie", {"power": None}, [0.0, 0.02, 1.0, 40.0],
                      [(-3.0, -2.0), (0.0, 0.0), (2.0, 1.5), (-1.0, 3.0), (0.5, -4.0)], None, None),
}
IDS = list(CASES)
#: moderate nuisance values for the draws (three columns): moments well estimated by 40000 draws
DRAW_S = {"zinb": [(-1.0, -1.0), (-0.5, 0.0), (0.5, -0.5)], "nb1": [-1.0, 0.0, 1.0],
          "truncated_nb": [-1.0, 0.0, 0.5], "hurdle_poisson": [-1.0, 0.0, 1.5],
          "hurdle_nb": [(-1.0, -1.0), (0.0, 0.0), (1.5, 0.5)],
          "ordered_beta": [(-1.0, 0.5, 1.0), (0.0, 1.0, 2.0), (-2.0, 1.2, 0.5)],
          "beta_hurdle": [(-1.0, 1.0), (0.0, 2.0), (1.5, 0.5)], "beta_binomial": [0.0, 1.5, 3.0],
          "tweedie_power": [(0.0, -1.0), (-0.5, 0.0), (0.3, 1.0)]}
M_GRID = np.array([-30.0, -4.0, -0.7, 0.0, 1.5, 5.0, 11.5, 30.0])
V_GRID = np.array([0.0, 1e-4, 0.05, 0.4, 0.9, 1.3, 5.0, 12.0])
DERIV_M = np.array([-30.0, -6.0, -1.0, 0.0, 0.6, 3.0, 9.0, 30.0])
DERIV_V = np.array([0.004, 0.03, 0.15, 0.4, 0.65, 0.9, 1.25, 3.0, 8.0])


def make(case):
    name, kw, ys, ss, trials, _ = CASES[case]
    return get_family(name) if not kw else type(get_family(name))(**kw), ys, ss, trials


def grid(case, m=M_GRID, v=V_GRID):
    fam, ys, ss, trials = make(case)
    Y, Mm, Vv = np.meshgrid(np.asarray(ys), m, v, indexing="ij")
    n = None if trials is None else np.full(Y.size, float(trials))
    return fam, Y.ravel(), Mm.ravel(), Vv.ravel(), ss, n


def stile(s, size):
    """Nuisance parameters for ``size`` cells: (size,) for a scalar, (size, q) for a vector."""
    if s is None:
        return None
    s = np.asarray(s, dtype=float)
    return np.full(size, float(s)) if s.ndim == 0 else np.tile(s, (size, 1))


def dense_ell(case, fam, y, m, v, s, n, panels):
    """E[log f] by composite 20-point Gauss-Legendre over z in [-15, 15], with REF."""
    x, w = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(-15.0, 15.0, panels + 1)
    half = 0.5 * np.diff(edges)
    z = ((edges[:-1] + half)[:, None] + half[:, None] * x).ravel()
    wz = (half[:, None] * w).ravel() * stats.norm.pdf(z)
    eta = m[:, None] + np.sqrt(v)[:, None] * z
    ss = None if s is None else (s[:, None] if s.ndim == 1 else s[:, None, :])
    nn = None if n is None else n[:, None]
    return REF[case](y[:, None], eta, ss, nn) @ wz


# --- ell is the exact expectation ----------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in IDS if CASES[c][5] is not None])
def test_ell_matches_dense_reference(case):
    fam, Y, Mm, Vv, ss, n = grid(case)
    panels = CASES[case][5]
    for s in ss:
        sa = stile(s, Y.size)
        got = fam.ell(Y, Mm, Vv, sa, n).value
        np.testing.assert_allclose(got, dense_ell(case, fam, Y, Mm, Vv, sa, n, panels),
                                   rtol=1e-10, atol=1e-9, err_msg=f"s = {s}")


@pytest.mark.parametrize("case", IDS)
def test_ell_at_zero_variance_is_loglik_is_reference(case):
    fam, Y, Mm, Vv, ss, n = grid(case, v=np.array([0.0]))
    for s in ss:
        sa = stile(s, Y.size)
        ll = fam.loglik(Y, Mm, sa, n)
        np.testing.assert_allclose(fam.ell(Y, Mm, Vv, sa, n).value, ll, rtol=1e-12, atol=1e-12)
        keep = np.abs(Mm) < 12                                    # scipy loses the far tails
        np.testing.assert_allclose(ll[keep], REF[case](Y, Mm, sa, n)[keep], rtol=1e-9, atol=1e-9)


# --- derivatives ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", IDS)
def test_dm_dv_and_price_identity(case):
    fam, Y, Mm, Vv, ss, n = grid(case, DERIV_M, DERIV_V)
    for s in ss:
        sa = stile(s, Y.size)
        e = fam.ell(Y, Mm, Vv, sa, n)
        close(e.d_m, fd(lambda x: fam.ell(Y, x, Vv, sa, n).value, Mm), 1e-6)
        close(e.d_v, fd(lambda x: fam.ell(Y, Mm, x, sa, n).value, Vv), 1e-6)
        close(2.0 * e.d_v, fd(lambda x: fam.ell(Y, x, Vv, sa, n).d_m, Mm), 1e-6)


@pytest.mark.parametrize("case", [c for c in IDS if CASES[c][3][0] is not None])
def test_ds_dss_match_finite_differences(case):
    fam, Y, Mm, Vv, ss, n = grid(case, DERIV_M, DERIV_V)
    for s in ss:
        sa = stile(s, Y.size)
        e = fam.ell(Y, Mm, Vv, sa, n, order=2)
        assert fam.ell(Y, Mm, Vv, sa, n).d_ss is None
        if sa.ndim == 1:
            close(e.d_s, fd(lambda x: fam.ell(Y, Mm, Vv, x, n).value, sa), 1e-6)
            close(e.d_ss, fd(lambda x: fam.ell(Y, Mm, Vv, x, n).d_s, sa), 1e-6)
            continue
        q = sa.shape[1]
        assert e.d_s.shape == (Y.size, q) and e.d_ss.shape == (Y.size, q, q)
        np.testing.assert_array_equal(e.d_ss, np.swapaxes(e.d_ss, 1, 2))
        for k in range(q):
            def at(x, k=k, what="value"):
                t = sa.copy()
                t[:, k] = x
                return getattr(fam.ell(Y, Mm, Vv, t, n, order=1), what)
            close(e.d_s[:, k], fd(at, sa[:, k]), 1e-6)
            ref, noise = fd(lambda x: at(x, what="d_s"), sa[:, k])          # (N, q) at once
            close(e.d_ss[:, :, k].ravel(), (ref.ravel(), noise.ravel()), 1e-6)


@pytest.mark.parametrize("case", IDS)
def test_extremes_are_finite(case):
    fam, ys, ss, trials = make(case)
    m = np.array([-700.0, -60.0, -30.0, 30.0, 60.0, 250.0])
    for v in (0.0, 1e-12, 20.0):
        for s in ss[:3]:
            y = np.full(m.shape, ys[-1])
            n = None if trials is None else np.full(m.shape, float(trials))
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                try:
                    e = fam.ell(y, m, np.full(m.shape, v), stile(s, m.size), n, order=2)
                except FloatingPointError as err:      # numpy warnings inside are bugs too
                    raise AssertionError(f"{case} v={v} s={s}: {err}") from None
            for a in (e.value, e.d_m, e.d_v, e.d_s, e.d_ss):
                if a is not None:
                    assert np.all(np.isfinite(a)), (case, v, s)


# --- exact density, CDF, draws -------------------------------------------------------------
ETA = np.array([-2.0, -0.5, 0.0, 1.2, 2.5])


@pytest.mark.parametrize("case", [c for c in IDS if get_family(CASES[c][0]).discrete])
def test_cdf_is_the_sum_of_the_reference_pmf(case):
    fam, ys, ss, trials = make(case)
    for s in ss[:4]:
        sa = stile(s, ETA.size)
        n = None if trials is None else np.full(ETA.size, float(trials))
        for y in ys[:3]:
            yy = np.full(ETA.shape, y)
            ks = np.arange(0.0, y + 1.0)[:, None]
            ref = np.exp(REF[case](ks, np.broadcast_to(ETA, (ks.size, ETA.size)), sa, n)).sum(0)
            np.testing.assert_allclose(fam.cdf(yy, ETA, sa, n), ref, rtol=1e-9, atol=1e-12)
            lower = ref - np.exp(REF[case](yy, ETA, sa, n))
            np.testing.assert_allclose(fam.cdf_lower(yy, ETA, sa, n), lower, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("case", IDS)
def test_draws_match_reference_moments_and_are_seeded(case):
    fam, ys, ss, trials = make(case)
    eta = np.array([-1.0, 0.5, 1.5])
    s = None if ss[0] is None else np.array(DRAW_S[case], dtype=float)     # one row per column
    n_draw = 40000
    nn = None if trials is None else np.full((n_draw, 3), float(trials))
    draws = fam.sample(np.broadcast_to(eta, (n_draw, 3)), s, nn, rng=123)
    assert draws.shape == (n_draw, 3)
    np.testing.assert_array_equal(draws, fam.sample(np.broadcast_to(eta, (n_draw, 3)), s, nn, rng=123))
    fam.check_y(draws, nn)
    mean, var, p0 = ref_mean_var(case, eta, s, None if trials is None else np.full(3, float(trials)))
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(var / n_draw))
    np.testing.assert_allclose(draws.var(0), var, rtol=0.1)
    np.testing.assert_allclose((draws == 0).mean(0), p0, atol=5 * np.sqrt(0.25 / n_draw))
    n3 = None if trials is None else np.full(3, float(trials))
    np.testing.assert_allclose(fam.mean(eta, n3, s=s), mean, rtol=1e-8)
    try:
        np.testing.assert_allclose(fam.variance(fam.mean(eta, n3, s=s), s, n3), var, rtol=1e-8)
    except NotImplementedError:
        pass


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("case", [c for c in SUPPORT if c != "tweedie_power"])   # see below
def test_cdf_of_continuous_families_is_the_reference_integral(case):
    fam, ys, ss, trials = make(case)
    lo, _ = SUPPORT[case]
    for s in ss[:3]:
        for j, e in enumerate(ETA):
            sj = None if s is None else np.asarray(s, dtype=float)
            for y in ys:
                atoms = ATOMS.get(case, lambda e, s: {})(e, sj)
                mass = sum(np.exp(lp) for y0, lp in atoms.items() if y0 <= y)
                below = sum(np.exp(lp) for y0, lp in atoms.items() if y0 < y)
                dens = integrate.quad(lambda u: np.exp(REF[case](np.array([u]), np.array([e]), sj, None)[0]),
                                      lo, min(y, SUPPORT[case][1]), epsabs=1e-13, limit=200)[0] \
                    if y > lo else 0.0
                sa = None if s is None else stile(s, 1)
                got = fam.cdf(np.array([y]), np.array([e]), sa)[0]
                got_lo = fam.cdf_lower(np.array([y]), np.array([e]), sa)[0]
                assert got == pytest.approx(dens + mass, rel=1e-8, abs=1e-11), (s, e, y)
                assert got_lo == pytest.approx(dens + below, rel=1e-8, abs=1e-11), (s, e, y)


# --- validation and parameters -------------------------------------------------------------
BAD_Y = {"zinb": ([2.0, 0.5], "whole-number"), "nb1": ([0.0, -1.0], "non-negative"),
         "truncated_poisson": ([1.0, 0.0], "at least 1"), "truncated_nb": ([2.0, 1.5], "at least 1"),
         "hurdle_poisson": ([0.0, -2.0], "non-negative"), "hurdle_nb": ([3.0, 0.2], "whole-number"),
         "exponential": ([0.0, -0.5], "non-negative"), "ordered_beta": ([1.0, 1.5], "between 0 and 1"),
         "beta_hurdle": ([0.0, 1.0], "exact 1s"), "beta_binomial": ([3.0, 9.0], "between 0 and trials"),
         "tweedie_power": ([0.0, -2.0], "non-negative")}


@pytest.mark.parametrize("case", list(BAD_Y))
def test_check_y_rejects_bad_values(case):
    fam, _, _, trials = make(case)
    bad, needle = BAD_Y[case]
    n = None if trials is None else np.full(2, float(trials))
    with pytest.raises(JSDMError, match=needle) as err:
        fam.check_y(np.array(bad), n)
    assert str(bad[1])[:3] in str(err.value)
    fam.check_y(np.array([bad[0], np.nan]), None if n is None else n)


@pytest.mark.parametrize("case", IDS)
def test_dispersion_round_trip_and_labels(case):
    fam, _, ss, _ = make(case)
    if ss[0] is None:
        assert not fam.has_dispersion
        return
    s = np.array([np.asarray(x, dtype=float) for x in ss])
    disp = fam.dispersion(s)
    np.testing.assert_allclose(fam.dispersion_param(disp), s, rtol=1e-10, atol=1e-10)
    if s.ndim == 2:
        q = fam.n_dispersion(np.full((3, 2), np.nan))
        assert q == s.shape[1] and disp.shape == s.shape
        assert len(fam.dispersion_labels(q)) == q


def test_registry_names_and_aliases():
    for key, name in [("zinb", "zinb"), ("zero-inflated-negative-binomial", "zinb"), ("nb1", "nb1"),
                      ("nbinom1", "nb1"), ("NB1", "nb1"), ("hurdle-poisson", "hurdle_poisson"),
                      ("poisson_hurdle", "hurdle_poisson"), ("hurdle_negative_binomial", "hurdle_nb"),
                      ("zero_truncated_poisson", "truncated_poisson"), ("ztnb", "truncated_nb"),
                      ("exponential", "exponential"), ("expon", "exponential"),
                      ("ordbeta", "ordered_beta"), ("ordered-beta", "ordered_beta"),
                      ("beta_hurdle", "beta_hurdle"), ("hurdle_beta", "beta_hurdle"),
                      ("beta-binomial", "beta_binomial"), ("betabinom", "beta_binomial")]:
        assert get_family(key).name == name
    for key in ("tweedie_power", "tweedie-p", "Tweedie power"):
        fam = get_family(key)
        assert fam.name == "tweedie" and fam.power is None
    assert get_family("tweedie").power == 1.5


def test_zinb_reduces_to_nb_without_zero_inflation():
    """pi -> 0: the NB log-density and ell, in value and d_m, d_v, d_phi."""
    zinb, nb = get_family("zinb"), get_family("nb")
    y = np.array([0.0, 0.0, 3.0, 40.0])
    m, v = np.array([-1.0, 2.0, 1.0, 3.5]), np.array([0.0, 0.7, 0.3, 1.5])
    sp = np.full(4, 0.4)
    e1 = zinb.ell(y, m, v, np.column_stack([np.full(4, -40.0), sp]), order=2)
    e0 = nb.ell(y, m, v, sp, order=2)
    for a, b in ((e1.value, e0.value), (e1.d_m, e0.d_m), (e1.d_v, e0.d_v), (e1.d_s[:, 1], e0.d_s),
                 (e1.d_ss[:, 1, 1], e0.d_ss)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_zinb_dispersion_start_recovers_simulated_values():
    fam = get_family("zinb")
    truth = np.array([[0.2, 0.5], [0.4, 1.5]])
    eta = np.broadcast_to(np.array([1.5, 2.5]), (6000, 2))
    y = fam.sample(eta, fam.dispersion_param(truth), rng=7)
    got = fam.dispersion(fam.dispersion_start(y, np.exp(eta), n_dispersion=2))
    np.testing.assert_allclose(got[:, 0], truth[:, 0], atol=0.06)
    np.testing.assert_allclose(got[:, 1], truth[:, 1], rtol=0.35)


def test_beta_binomial_needs_trials_and_tends_to_the_binomial():
    fam, binom = get_family("beta_binomial"), get_family("binomial")
    with pytest.raises(JSDMError, match="needs the number of trials"):
        fam.check_y(np.array([0.0, 1.0]))
    y, n = np.array([0.0, 3.0, 7.0, 10.0]), np.full(4, 10.0)
    m, v = np.array([-1.0, 0.3, 1.0, 2.5]), np.array([0.0, 0.4, 1.0, 3.0])
    e1, e0 = fam.ell(y, m, v, np.full(4, 30.0), n, order=2), binom.ell(y, m, v, trials=n)
    for a, b in ((e1.value, e0.value), (e1.d_m, e0.d_m), (e1.d_v, e0.d_v)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)


def test_tweedie_estimated_power_equals_the_fixed_power_family():
    """ell, its m, v and log phi derivatives at s = (log phi, logit(p - 1)) are those of
    Tweedie(power=p), which test_families checks against the compound Poisson-gamma density."""
    from jsdm.families import Tweedie

    fam, Y, Mm, Vv, _, _ = grid("tweedie_power")
    for p in (1.05, 1.3, 1.5, 1.8, 1.97):
        for sp in (-3.0, 0.0, 2.0):
            s = np.column_stack([np.full(Y.size, sp), np.full(Y.size, special.logit(p - 1.0))])
            e, e0 = fam.ell(Y, Mm, Vv, s, order=2), Tweedie(power=p).ell(Y, Mm, Vv, np.full(Y.size, sp),
                                                                          order=2)
            for a, b in ((e.value, e0.value), (e.d_m, e0.d_m), (e.d_v, e0.d_v), (e.d_s[:, 0], e0.d_s),
                         (e.d_ss[:, 0, 0], e0.d_ss)):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)    # rounding of z
    assert get_family("tweedie_power").power is None and fam.dispersion_labels(2) == ["phi", "power"]
    # the rest of the family at per-species powers: as the fixed-power family column by column
    ps = np.array([1.2, 1.5, 1.85])
    s = np.column_stack([np.array([-0.5, 0.3, 1.0]), special.logit(ps - 1.0)])
    eta = np.array([[-1.0, 0.4, 2.0], [0.5, -2.0, 1.0]])
    y = np.array([[0.0, 0.3, 5.0], [2.0, 0.0, 0.01]])
    draws = fam.sample(np.broadcast_to(eta[0], (5, 3)), s, rng=3)
    for j, p in enumerate(ps):
        f0, sj = Tweedie(power=p), np.full(2, s[j, 0])
        for meth in ("loglik", "cdf", "cdf_lower"):
            np.testing.assert_allclose(getattr(fam, meth)(y, eta, s)[:, j],
                                       getattr(f0, meth)(y[:, j], eta[:, j], sj), rtol=1e-9)
        np.testing.assert_allclose(fam.variance(np.exp(eta), s)[:, j], f0.variance(np.exp(eta[:, j]), sj))
        assert np.all(draws[:, j] >= 0)
    np.testing.assert_allclose(fam.dispersion(s), np.column_stack([np.exp(s[:, 0]), ps]))


def test_tweedie_power_is_not_estimated_from_counts():
    """Whole-number responses make the likelihood unbounded as the power tends to 1."""
    counts = np.array([[0.0, 3.0], [1.0, 7.0], [np.nan, 0.0]])
    with pytest.raises(JSDMError, match="cannot be estimated from whole-number responses"):
        get_family("tweedie_power").check_y(counts)
    get_family("tweedie").check_y(counts)                        # a fixed power is fine
    get_family("tweedie_power").check_y(counts + 0.25)            # so is continuous biomass


def test_tweedie_power_arguments():
    """power=None estimates one power per species; a shared power is profile_power's job."""
    from jsdm.families import Tweedie, TweediePower

    assert Tweedie(power=None).n_dispersion(np.ones((2, 2))) == 2
    assert get_family("tweedie_power").power is None and isinstance(get_family("tweedie_power"),
                                                                     TweediePower)
    assert Tweedie().power == 1.5 and Tweedie().n_dispersion(np.ones((2, 2))) is None
    with pytest.raises(JSDMError, match="profile_power"):
        Tweedie(power="shared")
    with pytest.raises(JSDMError, match="strictly between 1 and 2"):
        Tweedie(power=2.0)
