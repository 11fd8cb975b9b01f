"""Ordinal responses (cumulative probit or logit): cut points per species or common to all.

Categories y = 0, ..., K-1 and P(Y <= k | eta) = F(tau_(k+1) - eta), with
tau_0 = -inf < tau_1 = 0 < tau_2 < ... < tau_(K-1) < tau_K = +inf. tau_1 is
fixed at 0 because the species intercept in eta sets the location. The free
cut points are parametrised without constraints as

    tau_k = sum_(i=2..k) exp(c_i),     s = (c_2, ..., c_(K-1)),  q = K - 2,

so **s is a matrix**: (m, q) with cut points per species (``cutpoints="species"``,
the default), or (1, q) with one set shared by all species (``cutpoints="common"``,
R gllvm's ``zeta.struc = "common"``). ``ELL.d_s`` is (..., q) and ``ELL.d_ss``
(..., q, q), per cell; the engine sums them over sites (and, for a shared set,
over species).

Categories nobody uses. A species that never shows some category has cut points
the data do not identify: the maximum of the likelihood is their limit (the two
cut points around an unused middle category equal, those above its largest
category +inf, below its smallest -inf). An optimiser only approaches that limit
(the log gaps run to the box of the engine, slowly), and the Hessian is singular
there. :meth:`Ordinal.prepare` (called when the problem is built) therefore
merges, for each species (or, with common cut points, over all species), the
categories it never uses: the species' model has K_j = (number of categories it
uses) ordered classes, the ranks of those categories; its cut points between
them are the free parameters (K_j - 2 of them; the rest of its row of ``s`` is
held fixed and left out of the fit), and the reported cut points between the
original categories take the limits above. This is exact: the likelihood at the
merged model equals the supremum of the unmerged one. A DataWarning says what
was merged.

For a cell in (rank) category r, with a = tau_r, b = tau_(r+1), A = a - eta,
B = b - eta, P = F(B) - F(A), gA = f(A)/P, gB = f(B)/P:

    h = log P,   h' = gA - gB,   h'' = f'(B)/P - f'(A)/P - (gA - gB)^2
    dh/db = gB,  dh/da = -gA,   d2h/db2 = f'(B)/P - gB^2,   d2h/da2 = -f'(A)/P - gA^2,
    d2h/da db = gA gB

and the chain rule through d tau_j / d c_i = exp(c_i) 1(2 <= i <= j). The
expectations under eta ~ N(m, v) use Hermite rules binned by the variance up
to v = 2, then the composite rule ``_wide_expectation``; measured max error
(abs, or relative where |value| > 1) against adaptive quadrature < 1e-10 for
v in [0, 20], |m| <= 30, categories from (-inf, 0] to a width of 0.01.
"""
import copy
import warnings

import numpy as np
from scipy import special

from .._numerics import LOG_2PI, binned_expectation, blocked, gh_rule
from ..exceptions import DataWarning, JSDMError
from .base import ELL, Family

_TABLE = ((0.05, 12), (0.2, 16), (0.5, 24), (1.0, 32), (2.0, 48))      # then _wide_expectation

#: cut-point structures: per species, or one set shared by all species (R gllvm's zeta.struc)
CUTPOINT_STRUCTURES = ("species", "common")


class Ordinal(Family):
    """Ordered categories 0..K-1, cumulative probit (default) or logit link.

    Parameters
    ----------
    link : "probit" (default) or "logit"
    cutpoints : "species" (default) or "common"
        Cut points per species, or one set shared by all species (R gllvm's
        ``zeta.struc = "common"``; far fewer parameters for sparse tables).
    """

    name = "ordinal"
    aliases = ("ordered", "cumulative")
    links = ("probit", "logit")
    default_link = "probit"
    has_dispersion = True
    dispersion_name = "cutpoints"
    discrete = True
    description = "a cumulative model for ordered categories with species-specific cut points"

    def describe(self):
        """The methods-text phrase (common cut points say so)."""
        if getattr(self, "cut_structure", None) == "common":
            return ("a cumulative model for ordered categories with one set of cut points shared "
                    "by all species")
        return self.description

    def __init__(self, link=None, cutpoints="species"):
        super().__init__(link)
        if cutpoints not in CUTPOINT_STRUCTURES:
            raise JSDMError(f"cutpoints must be one of {', '.join(map(repr, CUTPOINT_STRUCTURES))} "
                            f"(per species, or one set shared by all species); got {cutpoints!r}")
        self.cut_structure = cutpoints
        self.categories_used = None     # (rows, K) bool once bound to data by ``prepare``

    def __repr__(self):
        return f"Ordinal(link={self.link!r}, cutpoints={self.cut_structure!r})"

    def __getstate__(self):
        """Picklable (for worker processes): the cached quadrature rules (closures) are dropped
        and rebuilt on first use."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_bins")}

    @property
    def link_residual_variance(self):
        """Latent-scale residual variance: probit 1, logit pi^2/3."""
        return 1.0 if self.link == "probit" else np.pi ** 2 / 3.0

    def start_intercept(self, y, w, trials=None):
        """From P(lowest category used) = F(tau_1 - eta) with tau_1 = 0: -F^-1(its share), clipped."""
        p0 = np.clip((w * (self.ranks(y) == 0)).sum(0) / np.maximum(w.sum(0), 1), 0.02, 0.98)
        return -_quantile(p0, self.link)

    @property
    def shared_dispersion(self):
        """True when one set of cut points serves every species (s is (1, q))."""
        return self.cut_structure == "common"

    # --- binding to the data: which categories each species uses ------------------------------
    def prepare(self, y, species=None):
        """A copy bound to the responses ``y`` (n, m; NaN missing): the categories in use.

        With cut points per species each species keeps the categories it shows
        (the others are merged, see the module doc); with common cut points the
        categories shown by any species. Warns (DataWarning) about what was merged.
        """
        y = np.asarray(y, dtype=float)
        K = _n_categories(y)
        seen = np.isfinite(y)
        used = np.stack([np.any(seen & (y == k), axis=0) for k in range(K)], axis=-1)   # (m, K)
        new = copy.copy(self)
        for key in ("_bins1", "_bins2"):
            new.__dict__.pop(key, None)
        if self.shared_dispersion:
            new.categories_used = used.any(axis=0, keepdims=True)
        else:
            new.categories_used = used
        _check_and_report(new, used, K, species)
        return new

    def with_cutpoints(self, cutpoints):
        """A new ordinal family with the given cut-point structure."""
        return type(self)(link=self.link, cutpoints=cutpoints)

    def take_species(self, order):
        """The bound family with its species (rows of ``categories_used``) in ``order``."""
        if self.categories_used is None or self.shared_dispersion:
            return self
        new = copy.copy(self)
        new.categories_used = self.categories_used[np.asarray(order)]
        return new

    def free_dispersion(self):
        """(rows, q) bool: the entries of s the fit estimates (None: all of them, or unbound)."""
        if self.categories_used is None:
            return None
        kj = self.categories_used.sum(axis=1)
        q = int(kj.max()) - 2
        return np.arange(q)[None, :] < (kj - 2)[:, None]

    def _structure(self, c):
        """(used (rows, K) bool, ranks (rows, K) int, K_j (rows,)) for s = c (rows, q)."""
        U = self.categories_used
        if U is None:
            U = np.ones((c.shape[0], c.shape[1] + 2), dtype=bool)
        elif U.shape[0] != c.shape[0] or U.sum(axis=1).max() - 2 != c.shape[1]:
            raise JSDMError(f"ordinal: s of shape {c.shape} does not match the categories this "
                            f"family was prepared for ({U.shape[0]} row(s), "
                            f"{int(U.sum(axis=1).max()) - 2} free cut points)")
        return U, np.cumsum(U, axis=1) - 1, U.sum(axis=1)

    def ranks(self, y):
        """Each cell's category as the rank among its species' used categories (y unchanged when
        unbound); unused categories get the rank of the used one below (0 if none)."""
        y = np.asarray(y, dtype=float)
        if self.categories_used is None:
            return y
        R = np.maximum(np.cumsum(self.categories_used, axis=1) - 1, 0)
        k = np.clip(np.nan_to_num(y), 0, R.shape[1] - 1).astype(np.int64)
        cols = np.arange(y.shape[-1]) if R.shape[0] > 1 else np.zeros(y.shape[-1], dtype=int)
        return R[cols, k].astype(float)

    # --- the engine's entry point -------------------------------------------------------------
    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log P(y | eta)], eta ~ N(m, v); d_s is (..., q), d_ss (..., q, q)."""
        y, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v)))
        c = self._cuts_param(s)
        a, b, r, top = self._rank_bounds(y, c)
        outs = binned_expectation(m, v, self._bins(order), 8 if order >= 2 else 5, extra=(a, b))
        logp, d1, d2, ga, gb = outs[:5]
        d_s, d_ss = self._chain(r, top, c, ga, gb, outs[5:] if order >= 2 else None)
        return ELL(logp, d1, 0.5 * d2, d_s, d_ss)

    def _bins(self, order):
        key = "_bins2" if order >= 2 else "_bins1"
        if not hasattr(self, key):
            fun = _node_fun(self.link, order >= 2)
            point = ((0.0, lambda mu, sd, a, b: fun(np.array(mu, dtype=float), a, b)),)
            wide = ((np.inf, lambda mu, sd, a, b: _wide_expectation(fun, mu, sd, a, b)),)
            setattr(self, key, point + tuple((vv, gh_rule(fun, k)) for vv, k in _TABLE) + wide)
        return getattr(self, key)

    def _cuts_param(self, s):
        c = np.asarray(s, dtype=float)
        if c.ndim != 2:
            shape = "(1, K-2)" if self.shared_dispersion else "(m, K-2)"
            raise JSDMError(f"ordinal needs s as an {shape} array of log cut-point gaps; got shape "
                            f"{c.shape}")
        return c

    def _rank_table(self, c, kj):
        """(rows, q + 3) cut points between ranks: -inf, 0, tau_2, ..., +inf from rank K_j on."""
        rows, q = c.shape
        T = np.empty((rows, q + 3))
        T[:, 0], T[:, 1], T[:, -1] = -np.inf, 0.0, np.inf
        T[:, 2:q + 2] = np.cumsum(np.exp(c), axis=1)
        T[np.arange(q + 3)[None, :] >= kj[:, None]] = np.inf
        return T

    def _rank_bounds(self, y, c):
        """Per cell (a, b, rank, top rank K_j - 1) in rank space (finite for any y in 0..K-1)."""
        _, R, kj = self._structure(c)
        T = self._rank_table(c, kj)
        cols = _columns(y, T.shape[0])
        k = np.clip(y, 0, R.shape[1] - 1).astype(np.int64)
        r = np.maximum(R[cols, k], 0)
        return T[cols, r], T[cols, r + 1], r, (kj - 1)[cols]

    def cutpoints(self, s):
        """(rows, K-1) cut points between the categories 0|1, 1|2, ... (tau_1 = 0 is the first
        finite one); merged categories give equal cut points, and +inf above (-inf below) the
        categories a species uses."""
        c = self._cuts_param(s)
        U, _, kj = self._structure(c)
        T = self._rank_table(c, kj)
        idx = np.cumsum(U, axis=1)[:, :-1]               # used categories <= k, for boundary k|k+1
        return np.take_along_axis(T, idx, axis=1)

    def _bounds(self, y, c):
        """Per-cell (a, b) = (cut point below y, cut point above y) between the original categories."""
        tau = self.cutpoints(c)
        full = np.concatenate([np.full((tau.shape[0], 1), -np.inf), tau,
                               np.full((tau.shape[0], 1), np.inf)], axis=1)   # (rows, K+1)
        k = np.clip(y, 0, tau.shape[1]).astype(np.int64)
        cols = _columns(y, tau.shape[0])
        return full[cols, k], full[cols, k + 1]

    def _chain(self, r, top, c, ga, gb, second):
        """Derivatives in c = s through tau_j = sum_(2..j) exp(c_i) (rank space)."""
        q = c.shape[1]
        i = np.arange(2, q + 2)                                   # c_i for i = 2..K-1
        k = r[..., None]
        up = ((i <= k + 1) & (k + 1 <= top[..., None])).astype(float)   # tau_(r+1) finite, uses c_i
        lo = (i <= k).astype(float)                               # tau_r depends on c_i
        cols = _columns(r, c.shape[0])
        e = np.exp(c)[cols]
        g = e * (up * gb[..., None] - lo * ga[..., None])
        if second is None:
            return g, None
        # d2 h / dc_i dc_j = e_i e_j C_ij (+ g_i on the diagonal), with M = max(i, j):
        # C = daa + ok (dbb + 2 dab) where M <= r; ok (dbb + dab [min(i, j) <= r]) where M = r + 1;
        # 0 beyond (ok: tau_(r+1) is finite). Built from three masks, not outer products.
        daa, dbb, dab = second
        ok = (r + 1 <= top).astype(float)
        M = np.maximum(i[:, None], i[None, :])
        both = i[:, None] != i[None, :]                   # min(i, j) < M (= r + 1 on the edge)
        kk = k[..., None]
        inner = M <= kk
        edge = M == kk + 1
        C = inner * (daa + ok * (dbb + 2.0 * dab))[..., None, None]
        C += edge * (ok * dbb)[..., None, None]
        C += (edge & both) * (ok * dab)[..., None, None]
        h = C * (e[..., :, None] * e[..., None, :])
        h += g[..., :, None] * np.eye(q)
        return g, h

    # --- exact density and friends ------------------------------------------------------------
    def check_y(self, y, trials=None):
        """Categories must be whole numbers 0, 1, ..., K-1 (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = ~np.isnan(yy) & ~((yy >= 0) & (np.floor(yy) == yy) & np.isfinite(yy))
        if bad.any():
            raise JSDMError(
                f"family 'ordinal' needs categories coded 0, 1, ..., K-1; found {np.unique(yy[bad])[:5].tolist()}. "
                "Recode ordered classes as consecutive whole numbers starting at 0.")

    def loglik(self, y, eta, s=None, trials=None):
        """log P(Y = y | eta) (-inf for a category the species' model merged away)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        a, b = self._bounds(y, self._cuts_param(s))
        with np.errstate(divide="ignore"):
            return _log_prob(a - eta, b - eta, self.link)

    def probs(self, eta, s):
        """Category probabilities, shape eta.shape + (K,)."""
        tau = self.cutpoints(s)
        F = _cdf(tau - np.asarray(eta, dtype=float)[..., None], self.link)
        F = np.concatenate([np.zeros(F.shape[:-1] + (1,)), F, np.ones(F.shape[:-1] + (1,))], axis=-1)
        return np.diff(F, axis=-1)

    def mean(self, eta, trials=None, s=None):
        """E[Y] = sum_k k P(Y = k) when s is given, else the latent mean eta."""
        if s is None:
            return np.asarray(eta, dtype=float)
        p = self.probs(eta, s)
        return p @ np.arange(p.shape[-1], dtype=float)

    def variance(self, mu, s=None, trials=None):
        """Not a function of the mean for ordinal data."""
        raise NotImplementedError("ordinal variance depends on eta and the cut points, not on the mean")

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta) = F(tau_(y+1) - eta) (1 for the top category)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        _, b = self._bounds(y, self._cuts_param(s))
        return _cdf(b - eta, self.link)

    def sample(self, eta, s=None, trials=None, rng=None):
        """Categories drawn by thresholding the latent eta + noise (seeded by ``rng``)."""
        rng = np.random.default_rng(rng)
        eta = np.asarray(eta, dtype=float)
        noise = rng.standard_normal(eta.shape) if self.link == "probit" else rng.logistic(size=eta.shape)
        tau = self.cutpoints(s)
        return (eta[..., None] + noise[..., None] > tau).sum(-1).astype(float)

    def dispersion(self, s):
        """The cut points between categories (rows, K-1): see :meth:`cutpoints`."""
        return None if s is None else self.cutpoints(s)

    def dispersion_param(self, disp):
        """s = log gaps of the cut points (tau_1 is taken as 0; all categories in use)."""
        return np.log(np.diff(np.asarray(disp, dtype=float), axis=-1))

    def free_cutpoints(self, s):
        """(rows, q) the estimated cut points tau_2 < ... < tau_(K_j - 1) (rank space; NaN where held)."""
        c = self._cuts_param(s)
        tau = np.cumsum(np.exp(c), axis=1)
        free = self.free_dispersion()
        return tau if free is None else np.where(free, tau, np.nan)

    def reported_dispersion(self, s):
        """The estimated cut points behind the entries of s (:meth:`free_cutpoints`)."""
        return self.free_cutpoints(s)

    def reported_dispersion_labels(self, rows, q):
        """"k|l" per estimated cut point (:meth:`free_cutpoint_labels`)."""
        names = self.free_cutpoint_labels(rows)
        if names is not None:
            return names
        return super().reported_dispersion_labels(rows, q + 2)[:, 1:q + 1]

    def dispersion_jacobian(self, s, h=None):
        """Exact: tau_(k+2) = sum_(i <= k) exp(s_i) (log gaps), lower triangular; a row's held
        entries come after its free ones, so its free block is exact."""
        s = np.asarray(s, dtype=float)
        q = s.shape[1]
        return np.tril(np.ones((q, q)))[None, :, :] * np.exp(s)[:, None, :]

    def free_cutpoint_labels(self, rows):
        """(rows, q) labels "k|l" of the estimated cut points: between category k and the next used
        one l (l = k + 1 unless categories between were merged); None where held."""
        U = self.categories_used
        if U is None:
            return None
        q = int(U.sum(axis=1).max()) - 2
        out = np.full((U.shape[0], q), None, dtype=object)
        for j in range(U.shape[0]):
            cats = np.flatnonzero(U[j])
            for r in range(2, cats.size):
                out[j, r - 2] = f"{cats[r - 1]}|{cats[r]}"
        return out

    def n_dispersion(self, y, species=None):
        """q, the columns of s: (most categories a species uses, or all species together) - 2.

        Unbound (no :meth:`prepare`): K - 2 with K = 1 + the largest category in ``y``.
        """
        if self.categories_used is not None:
            return int(self.categories_used.sum(axis=1).max()) - 2
        return _n_categories(np.asarray(y, dtype=float)) - 2

    def dispersion_labels(self, k):
        """Names of the k = K - 1 reported cut points: "0|1", "1|2", ... (as R's ordinal/MASS)."""
        return [f"{i}|{i + 1}" for i in range(k)]

    def structure_note(self, species=None):
        """One line on the cut-point structure and what was merged (for summaries)."""
        what = ("one set shared by all species" if self.shared_dispersion else "per species")
        U = self.categories_used
        if U is None:
            return what
        if self.shared_dispersion:
            gone = np.flatnonzero(~U[0])
            return what + (f"; categories {', '.join(map(str, gone))} never observed (merged)"
                           if gone.size else "")
        n = int((~U).any(axis=1).sum())
        return what + (f"; {n} of {U.shape[0]} species do not use every category "
                       "(unused categories merged: see fit.dispersion)" if n else "")

    def dispersion_start(self, y, mu, n_dispersion=None):
        """Cut points from the category frequencies (F^-1 of cumulative shares), gaps logged.

        Per species (its used categories, as ranks) or pooled over all species for
        common cut points. Unbound: pooled shares of 0..K-1 for every species, with
        ``n_dispersion`` (q) fixing K = q + 2 when ``y`` is a subset of the data that
        may miss the top category.
        """
        y = np.asarray(y, dtype=float)
        if self.categories_used is None:
            K = int(np.nanmax(y)) + 1 if n_dispersion is None else int(n_dispersion) + 2
            if K < 3:
                raise JSDMError("ordinal needs at least 3 categories; use family='binomial' for 2")
            return np.tile(self._start_gaps(y, K), (y.shape[-1], 1))
        r = np.where(np.isfinite(y), self.ranks(y), np.nan)
        kj = self.categories_used.sum(axis=1)
        q = int(kj.max()) - 2
        if self.shared_dispersion:
            return self._start_gaps(r, q + 2)[None, :]
        out = np.zeros((y.shape[-1], q))
        for j in range(y.shape[-1]):
            if kj[j] >= 3:
                out[j, :kj[j] - 2] = self._start_gaps(r[:, j], int(kj[j]))
        return out

    def _start_gaps(self, r, K):
        share = np.array([np.nanmean(r <= k) for k in range(K - 1)])
        tau = _quantile(np.clip(share, 0.01, 0.99), self.link)
        return np.log(np.maximum(np.diff(tau), 0.05))


def _columns(y, rows):
    """Row of the per-species tables for each cell: its species (last axis of y), or 0 when shared."""
    y = np.asarray(y)
    n = y.shape[-1] if y.ndim else 1
    if rows == 1:
        return np.zeros(n, dtype=int) if y.ndim else 0
    return np.arange(n) if y.ndim else 0


def _n_categories(y):
    K = int(np.nanmax(y)) + 1 if np.isfinite(y).any() else 0
    if K < 3:
        raise JSDMError(f"ordinal needs at least 3 categories (0, 1, 2, ...); the data have {K}. "
                        "Use family='binomial' for two categories.")
    return K


def _check_and_report(fam, used, K, species):
    """Errors for unusable tables; a DataWarning saying which categories were merged."""
    m = used.shape[0]
    names = list(species) if species is not None else [f"column {j}" for j in range(m)]
    if fam.shared_dispersion:
        gone = np.flatnonzero(~used.any(axis=0))
        if used.any(axis=0).sum() < 3:
            raise JSDMError(f"ordinal needs at least 3 categories in use; the data use "
                            f"{int(used.any(axis=0).sum())}. Use family='binomial' for two.")
        if gone.size:
            warnings.warn(
                f"family 'ordinal' (common cut points): no species shows categor"
                f"{'y' if gone.size == 1 else 'ies'} {', '.join(map(str, gone))} of 0..{K - 1}; "
                "merged with the neighbouring categories (the cut points around them are equal, "
                "or +inf at the top). fit.dispersion shows them.", DataWarning, stacklevel=5)
        return
    kj = used.sum(axis=1)
    if kj.max() < 3:
        raise JSDMError(
            f"ordinal with cut points per species needs a species that uses at least 3 categories; "
            f"every species here uses at most {int(kj.max())}. Use cutpoints='common' (one set "
            "shared by all species) or family='binomial' on presence/absence.")
    gaps = []
    for j in np.flatnonzero(~used.all(axis=1)):
        cats = np.flatnonzero(used[j])
        gaps.append(f"{names[j]} (uses {_ranges(cats)})")
    if gaps:
        single = [names[j] for j in np.flatnonzero(kj == 1)]
        more = f"; and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        extra = (f" {len(single)} species use a single category and carry no information: "
                 f"{', '.join(map(str, single[:5]))}{' ...' if len(single) > 5 else ''}."
                 if single else "")
        warnings.warn(
            f"family 'ordinal' (cut points per species): {len(gaps)} of {m} species do not use every "
            f"category 0..{K - 1}: {'; '.join(gaps[:5])}{more}. Each species' unused categories "
            "were merged with its neighbours: its cut points above its largest category are +inf, "
            "below its smallest -inf, and equal around an unused middle one (the limits the "
            "likelihood tends to; they are not estimated). fit.dispersion shows them."
            f"{extra} With many such species, cutpoints='common' (one set of cut points shared by "
            "all species, as R gllvm's zeta.struc = \"common\") needs far fewer parameters.",
            DataWarning, stacklevel=5)


def _ranges(cats):
    """'0-2, 4' for [0, 1, 2, 4]."""
    out, start = [], cats[0]
    for a, b in zip(cats, list(cats[1:]) + [None]):
        if b is None or b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


# --- expectations under wide normals ----------------------------------------------------

_GL_X, _GL_W = np.polynomial.legendre.leggauss(10)
_NEAR, _NEAR_WIDTH, _FAR_WIDTH, _FAR_Z, _INSIDE = 6.0, 3.0, 12.0, 3.0, 40.0
# panels per interval at most: beyond sd ~ 270 the far panels widen past 12 (without the cap a
# trial step of an optimiser to sd ~ 1e6 asked for ~1.5 million panels per cell, and a
# cross-validation fold's fit ran out of memory at 13 GB). There the integrand's rate of
# change is set by the normal weight, which varies on the scale of sd, not of the panel
_MAX_PANELS = 400


def _wide_expectation(fun, mu, sd, a, b):
    """E[fun(U)], U ~ N(mu, sd^2), per cell for wide normals (here sd > sqrt(2)), exactly.

    Composite 10-point Gauss-Legendre on mu +- 9 sd (without the part deeper than 40
    inside an end category, where P = 1 in double precision), with panels at most 3 wide
    within 6 of a finite cut point (a or b) and at most min(12, 3 sd) wide
    elsewhere. log P(a - u < e < b - u) is analytic in a strip about the real
    axis whose half-width is ~2.8 next to a cut point and grows with the
    distance from both (the nearest zeros of P lie near the cut points and the
    middle of [a, b], as far off the axis as they are from the ends), so the
    wider panels away from the cut points lose nothing. Measured on 4,000 random
    cells (sd 1.4 to 25, |mu| up to 120, classes 0.01 to 12 wide or open-ended),
    probit and logit, against a rule with panels 0.5 wide and 16 nodes: the same
    error as the uniform 2-wide rule used before (< 2e-12 relative, < 1e-8 in
    h'' where the kernel's rounding dominates), with 3 to 4 times fewer nodes.
    """
    lo, hi = mu - 9.0 * sd, mu + 9.0 * sd
    # deep inside an end category (40 beyond its only cut point) P = 1 to double precision and
    # every output of ``fun`` is below 1e-17: that part of the line adds nothing
    lo = np.where(np.isneginf(a), np.maximum(lo, b - _INSIDE), lo)
    hi = np.where(np.isposinf(b), np.minimum(hi, a + _INSIDE), hi)
    hi = np.maximum(hi, lo)
    far = np.minimum(_FAR_WIDTH, _FAR_Z * sd)
    cuts = []
    for c in (a - _NEAR, a + _NEAR, b - _NEAR, b + _NEAR):
        c = np.where(np.isfinite(c), c, np.where(c > 0, hi, lo))
        cuts.append(np.clip(c, lo, hi))
    edges = np.sort(np.stack([lo, *cuts, hi]), axis=0)              # (6, cells)
    total = None
    for k in range(5):
        left, right = edges[k], edges[k + 1]
        mid = 0.5 * (left + right)
        dist = np.minimum(np.where(np.isfinite(a), np.abs(mid - a), np.inf),
                          np.where(np.isfinite(b), np.abs(mid - b), np.inf))
        width = np.where(dist < _NEAR, np.minimum(_NEAR_WIDTH, far), far)
        part = _panels(fun, mu, sd, left, right, width, (a, b))
        if part is not None:
            total = part if total is None else [t + p for t, p in zip(total, part)]
    if total is None:                                    # all mass where P = 1: zeros
        total = [np.zeros(mu.size) for _ in fun(mu[:1, None] * 0.0, a[:1], b[:1])]
    return tuple(total)


def _panels(fun, mu, sd, left, right, width, extra):
    """sum_k of the Gaussian-weighted Gauss-Legendre rule on equal panels of [left, right]
    (at most ``width`` wide; counts rounded up to multiples of 4 so that few groups form);
    None when every interval is empty."""
    length = np.maximum(right - left, 0.0)
    count = np.where(length > 0, np.clip(np.ceil(length / width), 1.0, _MAX_PANELS), 0.0)
    count = np.where(count > 2, 4.0 * np.ceil(count / 4.0), count).astype(int)
    out = None
    for p in np.unique(count[count > 0]):
        sel = np.flatnonzero(count == p)
        res = blocked(_panel_block(fun, int(p)), int(p) * _GL_X.size)(
            mu[sel], sd[sel], left[sel], length[sel], *(e[sel] for e in extra))
        if out is None:
            out = [np.zeros(mu.size) for _ in res]
        for o, r in zip(out, res):
            o[sel] = r
    return out


def _panel_block(fun, n_panels):
    pos = ((2.0 * np.arange(n_panels)[:, None] + 1.0 + _GL_X[None, :]) / (2.0 * n_panels)).ravel()
    wts = np.repeat(_GL_W[None, :], n_panels, axis=0).ravel() / (2.0 * n_panels)

    def block(mu, sd, left, length, *extra):
        u = left + np.multiply.outer(pos, length)                  # (nodes, cells)
        z = (u - mu) / sd
        w = np.multiply.outer(wts, length / (sd * np.sqrt(2.0 * np.pi))) * np.exp(-0.5 * z * z)
        return tuple((w * f).sum(0) for f in fun(u, *extra))

    return block


# --- link functions on the latent scale --------------------------------------------------

def _cdf(x, link):
    return special.ndtr(x) if link == "probit" else special.expit(x)


def _quantile(p, link):
    return special.ndtri(p) if link == "probit" else special.logit(p)


def _log_cdf(x, link):
    return special.log_ndtr(x) if link == "probit" else -np.logaddexp(0.0, -x)


def _log_pdf(x, link):
    if link == "probit":
        return -0.5 * x * x - 0.5 * LOG_2PI
    return -np.abs(x) - 2.0 * np.log1p(np.exp(-np.abs(x)))


def _dlog_pdf(x, link):
    """f'(x) / f(x), 0 at infinite x."""
    xf = np.where(np.isfinite(x), x, 0.0)
    return -xf if link == "probit" else -np.tanh(0.5 * xf)


def _log_prob(A, B, link):
    """log(F(B) - F(A)) for A < B, stable in both tails (flips to the survival side)."""
    flip = A > 0.0
    lo = np.where(flip, -B, A)
    hi = np.where(flip, -A, B)
    lhi = _log_cdf(hi, link)
    d = np.minimum(_log_cdf(lo, link) - lhi, -1e-300)
    return lhi + np.where(d > -0.6931, np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def _node_fun(link, second):
    """Pointwise h, h', h'', gA, gB (+ d2h/da2, d2h/db2, d2h/dadb) at eta = u."""
    def fun(u, a, b):
        A, B = a - u, b - u
        logp = _log_prob(A, B, link)
        ga = np.exp(_log_pdf(A, link) - logp)
        gb = np.exp(_log_pdf(B, link) - logp)
        fa, fb = ga * _dlog_pdf(A, link), gb * _dlog_pdf(B, link)      # f'(A)/P, f'(B)/P
        d1 = ga - gb
        out = [logp, d1, fb - fa - d1 * d1, ga, gb]
        if second:
            out += [-fa - ga * ga, fb - gb * gb, ga * gb]
        return out
    return fun
