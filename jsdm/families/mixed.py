"""Mixed response types in one model: a family per species, latent variables shared.

``family={"sp1": "poisson", "sp2": "binomial", "sp3": Gaussian(), ...}`` (a dict,
or a pandas Series such as a column of a species table) gives each species its
own family; ``gllvm`` binds the mapping to the data's species order
(``Mixed.bind``). Given the latent variables the cells are independent, each
with its own family, so the ELBO is the sum of the members' exact ell over
their columns: this composite family dispatches every call to the members on
their columns and the engine stays as it is.

Nuisance parameters: s is (m, q) with q the largest number any member has
(ordinal: K - 2, zinb: 2, NB: 1, Poisson: 0); a species whose family has fewer
keeps the remaining entries at 0 and they are not parameters
(``free_dispersion``: the engine packs, counts and reports the free ones only).
``dispersion(s)`` reports each member's values in the first columns of its rows
and NaN in the padding; ``species_families`` names every species' family.
"""
import copy

import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from .base import ELL, Family


class Mixed(Family):
    """A family per species (columns of the response table); see the module notes."""

    name = "mixed"
    aliases = ()
    links = ("mixed",)
    default_link = "mixed"
    dispersion_name = "dispersion"
    mean_uses_dispersion = True          # response means come from each member (and its s)
    accepts_cache = True

    def __init__(self, families=None, link=None):
        if link not in (None, "mixed"):
            raise JSDMError("a mixed-family model takes each species' link from its family: give "
                            "family instances in the mapping (e.g. {'sp1': Binomial(link='probit')}) "
                            f"instead of link={link!r}")
        self.link = "mixed"
        self.mapping = _as_mapping(families) if families is not None else {}
        self.members = None              # Family per column once bound
        self.widths = None               # nuisance entries per column once n_dispersion has run
        self.member_q = None             # each group's n_dispersion (None: scalar s)
        self.has_dispersion = any(f.has_dispersion for f in self.mapping.values())

    def __repr__(self):
        if self.members is None:
            return f"Mixed({len(self.mapping)} species, unbound)"
        return f"Mixed({', '.join(f'{n} x {c.size}' for n, c in self._names_counts())})"

    # --- binding to the data's species ---------------------------------------------------------
    def bind(self, species):
        """A copy bound to the species (columns) of the data, in their order.

        Raises a JSDMError naming species without a family, or mapping keys that
        are not species of the data.
        """
        species = pd.Index(species)
        keys = pd.Index(list(self.mapping))
        missing = [sp for sp in species if sp not in self.mapping]
        extra = [k for k in keys if k not in set(species)]
        if missing:
            raise JSDMError(f"family mapping has no family for {len(missing)} species: "
                            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; give every species "
                            "of the response table a family")
        if extra:
            raise JSDMError(f"family mapping names {len(extra)} species that are not in the data: "
                            f"{extra[:8]}{' ...' if len(extra) > 8 else ''}; check the labels")
        new = Mixed(self.mapping)
        new.members = [self.mapping[sp] for sp in species]
        new.species = species
        new.groups = _groups(new.members)
        return new

    @property
    def uses_trials(self):
        """True when some species' family counts successes out of trials."""
        fams = self.members if self.members is not None else list(self.mapping.values())
        return any(getattr(f, "uses_trials", False) for f in fams)

    def column_groups(self, m=None):
        """[(family, column indices)] for the bound columns, one entry per distinct family."""
        self._need_bound()
        if m is not None and m != len(self.members):
            raise JSDMError(f"mixed family bound to {len(self.members)} species, asked about {m}")
        return [(g["family"], g["cols"]) for g in self.groups]

    def species_families(self):
        """Series species -> "family(link)" (the bound order)."""
        self._need_bound()
        return pd.Series([f.label() for f in self.members], index=self.species, name="family")

    @property
    def composition(self):
        """'mixed: poisson x3, binomial(probit) x2, ...' (the families and their species counts)."""
        if self.members is None:
            return "mixed"
        return "mixed: " + ", ".join(f"{n} x{c.size}" for n, c in self._names_counts())

    @property
    def description(self):
        """A phrase for a methods paragraph."""
        return ("a family per species (" + ", ".join(f"{n} for {c.size} species"
                                                     for n, c in self._names_counts()) + ")")

    def _names_counts(self):
        return [(g["family"].label(), g["cols"]) for g in self.groups]

    def _need_bound(self):
        if self.members is None:
            raise JSDMError("this mixed family is not bound to the data's species yet "
                            "(jsdm.gllvm does that; or call family.bind(species))")

    def _need_widths(self, s):
        if self.widths is None and s is not None:
            raise JSDMError("mixed family: call n_dispersion(y) before using nuisance parameters")

    # --- what the layers above ask, answered by each species' own family ------------------------
    @property
    def missing_fill(self):
        """(m,): each member's valid fill value for missing cells, on its columns."""
        return self._per_column(lambda f, k: np.full(k, float(f.missing_fill)))

    @property
    def zero_atom(self):
        """True when 'presence' (y > 0) means something for every member (counts, biomass)."""
        fams = self.members if self.members is not None else list(self.mapping.values())
        return all(f.discrete or f.zero_atom for f in fams)

    observation_variance_formula = "each species' own family's observation-level variance"

    def _per_column(self, fun):
        self._need_bound()
        out = np.empty(len(self.members))
        for g in self.groups:
            out[g["cols"]] = fun(g["family"], g["cols"].size)
        return out

    def start_intercept(self, y, w, trials=None):
        """Each member's starting intercepts on its columns."""
        self._need_bound()
        y = np.asarray(y, dtype=float)
        w = np.broadcast_to(np.asarray(w, dtype=float), y.shape)
        out = np.empty(y.shape[1])
        for g in self.groups:
            cols = g["cols"]
            out[cols] = g["family"].start_intercept(y[:, cols], w[:, cols],
                                                   None if trials is None else
                                                   np.broadcast_to(trials, y.shape)[:, cols])
        return out

    def informative_records(self, y, trials=None):
        """Each member's informative records on its columns (every observed record where the
        member says all of them inform it)."""
        self._need_bound()
        y = np.asarray(y, dtype=float)
        out = np.empty(y.shape[1])
        for g in self.groups:
            cols = g["cols"]
            info = g["family"].informative_records(
                y[:, cols], None if trials is None else np.broadcast_to(trials, y.shape)[:, cols])
            out[cols] = np.sum(~np.isnan(y[:, cols]), axis=0) if info is None else info
        return out

    def link_variance(self, dispersion, m, method=None):
        """Each member's link-scale residual variance on its columns; ``dispersion`` is the
        reported (m, q) table (NaN padding) or None."""
        self._need_bound()
        disp = None if dispersion is None else np.asarray(dispersion, dtype=float).reshape(m, -1)
        out = np.zeros(m)
        for gi, g in enumerate(self.groups):
            fam, cols = g["family"], g["cols"]
            d = None
            if disp is not None and fam.has_dispersion:
                q = self.member_q[gi] if self.member_q is not None else None
                d = disp[cols, 0] if q is None else disp[cols, :q]
            meth = method if method in fam.link_variance_methods else None
            out[cols] = np.broadcast_to(np.asarray(fam.link_variance(d, cols.size, method=meth),
                                                   dtype=float), (cols.size,))
        return out

    @property
    def link_variance_methods(self):
        """The methods any member offers."""
        fams = self.members if self.members is not None else list(self.mapping.values())
        return tuple(dict.fromkeys(k for f in fams for k in f.link_variance_methods))

    def reported_dispersion(self, s):
        """(m, q): each member's reported value behind each of its entries of s (ordinal: its
        estimated cut points), NaN in the padding."""
        s = np.asarray(s, dtype=float)
        out = np.full(s.shape, np.nan)
        for gi, g in enumerate(self.groups):
            sg = self._s_of(gi, s, g["cols"])
            if sg is None:
                continue
            if sg.ndim == 1:
                out[g["cols"], 0] = np.asarray(g["family"].dispersion(sg), dtype=float)
            else:
                out[g["cols"], :sg.shape[1]] = g["family"].reported_dispersion(sg)
        return out

    def dispersion_jacobian(self, s, h=1e-6):
        """(m, q, q): each member's Jacobian of its reported entries in its own block (exact
        where the member's is), zeros elsewhere."""
        s = np.asarray(s, dtype=float)
        m, q = s.shape
        D = np.zeros((m, q, q))
        for gi, g in enumerate(self.groups):
            sg = self._s_of(gi, s, g["cols"])
            if sg is None:
                continue
            cols = g["cols"]
            if sg.ndim == 1:
                step = h * (1.0 + np.abs(sg))
                fam = g["family"]
                D[cols, 0, 0] = (np.asarray(fam.dispersion(sg + step), dtype=float)
                                 - np.asarray(fam.dispersion(sg - step), dtype=float)) / (2 * step)
            else:
                w = sg.shape[1]
                D[cols, :w, :w] = g["family"].dispersion_jacobian(sg)
        return D

    def reported_dispersion_labels(self, rows, q):
        """(m, q): each member's labels of its entries on its rows ("" in the padding)."""
        self._need_bound()
        out = np.full((len(self.members), q), "", dtype=object)
        for gi, g in enumerate(self.groups):
            fam, cols = g["family"], g["cols"]
            if not fam.has_dispersion:
                continue
            mq = self.member_q[gi]
            w = 1 if mq is None else mq
            if mq is None:
                out[cols, 0] = fam.dispersion_name or "dispersion"
            else:
                out[cols, :w] = fam.reported_dispersion_labels(cols.size, w)
        return out

    # --- nuisance parameters -------------------------------------------------------------------
    def n_dispersion(self, y, species=None):
        """q = the largest number of nuisance parameters of the members (data-dependent for
        ordinal members); fixes each column's width."""
        self._need_bound()
        y = np.asarray(y, dtype=float)
        widths = np.zeros(len(self.members), dtype=int)
        self.member_q = []
        for g in self.groups:
            fam, cols = g["family"], g["cols"]
            q = fam.n_dispersion(y[:, cols], None if species is None else pd.Index(species)[cols]) \
                if fam.has_dispersion else None
            self.member_q.append(q)
            widths[cols] = 0 if not fam.has_dispersion else (1 if q is None else q)
        self.widths = widths
        return max(1, int(widths.max()))

    def prepare(self, y, species=None):
        """A copy whose members are bound to their columns of ``y`` (ordinal: categories used)."""
        self._need_bound()
        y = np.asarray(y, dtype=float)
        new = copy.copy(self)
        new.groups = []
        for g in self.groups:
            fam, cols = g["family"], g["cols"]
            sub = fam.prepare(y[:, cols], None if species is None else pd.Index(species)[cols])
            if getattr(sub, "shared_dispersion", False):
                raise JSDMError(f"{fam.label()}: nuisance parameters shared by all species (e.g. "
                                "common ordinal cut points) are not available in a model with a "
                                "family per species; use per-species ones")
            new.groups.append({"family": sub, "cols": cols})
        return new

    def take_species(self, order):
        """The bound family with its species in ``order`` (each member's own state reordered)."""
        self._need_bound()
        order = np.asarray(order)
        species = self.species[order]
        new = Mixed(self.mapping)
        new.members = [self.members[k] for k in order]
        new.species = species
        new.groups = _groups(new.members)
        pos = {sp: j for j, sp in enumerate(self.species)}
        old = {_key(self.members[g["cols"][0]]): g for g in self.groups}
        q_of = {_key(self.members[g["cols"][0]]): q
                for g, q in zip(self.groups, self.member_q or [None] * len(self.groups))}
        for g in new.groups:
            key = _key(new.members[g["cols"][0]])
            before = list(old[key]["cols"])
            perm = [before.index(pos[sp]) for sp in species[g["cols"]]]
            g["family"] = old[key]["family"].take_species(perm)
        if self.widths is not None:
            new.widths = self.widths[order]
            new.member_q = [q_of[_key(new.members[g["cols"][0]])] for g in new.groups]
        return new

    def free_dispersion(self):
        """(m, q) bool: entry k of species j is a parameter where k < that species' width and
        the species' own family estimates it (ordinal: cut points of categories it uses)."""
        self._need_widths(0)
        q = max(1, int(self.widths.max()))
        out = np.arange(q)[None, :] < self.widths[:, None]
        for g in self.groups:
            own = g["family"].free_dispersion() if g["family"].has_dispersion else None
            if own is not None:
                own = np.asarray(own, dtype=bool)
                out[g["cols"], :own.shape[1]] &= own
        return out

    def _s_of(self, gi, s, cols):
        """The member's s for its columns: None, (k,) for a scalar, (k, q) for a vector."""
        fam = self.groups[gi]["family"]
        if not fam.has_dispersion or s is None:
            return None
        s = np.asarray(s, dtype=float)
        q = self.member_q[gi]
        return s[cols, 0] if q is None else s[cols, :q]

    def dispersion_labels(self, k):
        """dispersion1..k (each species' family says what its entries are)."""
        return ["dispersion"] if k == 1 else [f"dispersion{i + 1}" for i in range(k)]

    @property
    def dispersion_positive(self):
        """Per column: positive for every member that uses it."""
        self._need_widths(0)
        q = max(1, int(self.widths.max()))
        out = np.ones(q, dtype=bool)
        for gi, g in enumerate(self.groups):
            fam = g["family"]
            if fam.has_dispersion:
                pos = getattr(fam, "dispersion_positive", None)
                if pos is not None:
                    out[:len(pos)] &= np.asarray(pos, dtype=bool)
        return tuple(out)

    def dispersion(self, s):
        """(m, q): each species' reported nuisance values in its first columns, NaN after."""
        if s is None:
            return None
        s = np.asarray(s, dtype=float)
        out = np.full(s.shape, np.nan)
        for gi, g in enumerate(self.groups):
            sg = self._s_of(gi, s, g["cols"])
            if sg is None:
                continue
            d = np.asarray(g["family"].dispersion(sg), dtype=float)
            d = d[:, None] if d.ndim == 1 else d[:, -sg.shape[1]:]      # ordinal: free cut points
            out[g["cols"], :d.shape[1]] = d
        return out

    def dispersion_param(self, disp):
        """s from reported values (NaN padding -> 0)."""
        disp = np.asarray(disp, dtype=float)
        out = np.zeros(disp.shape)
        for gi, g in enumerate(self.groups):
            fam, cols = g["family"], g["cols"]
            if not fam.has_dispersion:
                continue
            q = self.member_q[gi]
            out[cols, :(1 if q is None else q)] = np.reshape(
                fam.dispersion_param(disp[cols, 0] if q is None else disp[cols, :q]), (cols.size, -1))
        return out

    def dispersion_start(self, y, mu, n_dispersion=None):
        """Each member's start on its columns (0 in the padding)."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        out = np.zeros((y.shape[-1], max(1, int(self.widths.max()))))
        for gi, g in enumerate(self.groups):
            fam, cols = g["family"], g["cols"]
            if not fam.has_dispersion:
                continue
            q = self.member_q[gi]
            kw = {} if q is None else {"n_dispersion": q}
            st = fam.dispersion_start(y[..., cols], mu[..., cols], **kw)
            if st is not None:
                out[cols, :(1 if q is None else q)] = np.reshape(st, (cols.size, -1))
        return out

    # --- the engine's entry point --------------------------------------------------------------
    def ell(self, y, m, v, s=None, trials=None, order=1, cache=None):
        """Each member's exact ell on its columns; d_s (..., q) and d_ss (..., q, q) with zeros in
        the padding."""
        self._need_bound()
        y, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v)))
        if y.shape[-1] != len(self.members):
            raise JSDMError(f"mixed family: expected {len(self.members)} species columns, got "
                            f"{y.shape[-1]}")
        val, d_m, d_v = np.empty(y.shape), np.empty(y.shape), np.empty(y.shape)
        q = None if s is None else np.shape(s)[-1]
        d_s = None if q is None else np.zeros(y.shape + (q,))
        d_ss = None if q is None or order < 2 else np.zeros(y.shape + (q, q))
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), y.shape)
        for gi, g in enumerate(self.groups):
            fam, cols = g["family"], g["cols"]
            kw = {}
            if cache is not None and getattr(fam, "accepts_cache", False):
                kw["cache"] = cache.setdefault(gi, {})
            sg = self._s_of(gi, s, cols)
            e = fam.ell(y[..., cols], m[..., cols], v[..., cols], sg,
                        None if tr is None else tr[..., cols], order=order, **kw)
            val[..., cols], d_m[..., cols], d_v[..., cols] = e.value, e.d_m, e.d_v
            if sg is not None:
                w = 1 if sg.ndim == 1 else sg.shape[1]
                d_s[..., cols, :w] = e.d_s[..., None] if sg.ndim == 1 else e.d_s
                if d_ss is not None:
                    d_ss[..., cols, :w, :w] = e.d_ss[..., None, None] if sg.ndim == 1 else e.d_ss
        return ELL(val, d_m, d_v, d_s, d_ss)

    # --- everything else, column by column ------------------------------------------------------
    def _apply(self, method, arr, s, trials, *args, fill=np.nan, out_shape=None):
        """Call ``member.method(arr[..., cols], *args, s_member, trials_member)`` per group."""
        self._need_bound()
        arr = np.asarray(arr, dtype=float)
        out = np.full(arr.shape if out_shape is None else out_shape, fill)
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), arr.shape)
        for gi, g in enumerate(self.groups):
            cols = g["cols"]
            sub = [a[..., cols] for a in (arr, *args)]
            out[..., cols] = getattr(g["family"], method)(
                *sub, s=self._s_of(gi, s, cols), trials=None if tr is None else tr[..., cols])
        return out

    def check_y(self, y, trials=None):
        """Each member's check on its columns; the error names the species."""
        self._need_bound()
        y = np.asarray(y, dtype=float)
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), y.shape)
        for g in self.groups:
            cols = g["cols"]
            try:
                g["family"].check_y(y[..., cols], None if tr is None else tr[..., cols])
            except JSDMError as err:
                who = list(self.species[cols])
                raise JSDMError(f"species {who[:6]}{' ...' if len(who) > 6 else ''} "
                                f"({g['family'].label()}): {err}") from None

    def loglik(self, y, eta, s=None, trials=None):
        """Each member's exact log f on its columns."""
        return self._apply("loglik", y, s, trials, eta)

    def mean(self, eta, trials=None, s=None):
        """Each member's mean on its columns (with s where it matters)."""
        eta = np.asarray(eta, dtype=float)
        out = np.empty(eta.shape)
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), eta.shape)
        for gi, g in enumerate(self.groups):
            cols = g["cols"]
            out[..., cols] = g["family"].mean(eta[..., cols], None if tr is None else tr[..., cols],
                                              s=self._s_of(gi, s, cols))
        return out

    def variance(self, mu, s=None, trials=None):
        """Each member's variance function on its columns (NaN where it has none)."""
        mu = np.asarray(mu, dtype=float)
        out = np.full(mu.shape, np.nan)
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), mu.shape)
        for gi, g in enumerate(self.groups):
            cols = g["cols"]
            try:
                out[..., cols] = g["family"].variance(mu[..., cols], self._s_of(gi, s, cols),
                                                      None if tr is None else tr[..., cols])
            except NotImplementedError:
                pass
        return out

    def cdf(self, y, eta, s=None, trials=None):
        """Each member's CDF on its columns."""
        return self._apply("cdf", y, s, trials, eta)

    def cdf_lower(self, y, eta, s=None, trials=None):
        """Each member's P(Y < y) on its columns."""
        return self._apply("cdf_lower", y, s, trials, eta)

    def sample(self, eta, s=None, trials=None, rng=None):
        """Each member's draws on its columns (one generator, groups in order)."""
        self._need_bound()
        rng = np.random.default_rng(rng)
        eta = np.asarray(eta, dtype=float)
        out = np.empty(eta.shape)
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), eta.shape)
        for gi, g in enumerate(self.groups):
            cols = g["cols"]
            out[..., cols] = g["family"].sample(eta[..., cols], self._s_of(gi, s, cols),
                                                None if tr is None else tr[..., cols], rng)
        return out

    #: no single latent-scale residual: ``link_variance`` and ``observation_variance`` answer
    #: per species from each member
    link_residual_variance = 0.0

    def observation_variance(self, mu, s=None, trials=None):
        """Each member's observation-level variance on its columns."""
        mu = np.asarray(mu, dtype=float)
        out = np.full(mu.shape, np.nan)
        tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), mu.shape)
        for gi, g in enumerate(self.groups):
            cols = g["cols"]
            out[..., cols] = g["family"].observation_variance(
                mu[..., cols], self._s_of(gi, s, cols), None if tr is None else tr[..., cols])
        return out


def _as_mapping(families):
    """{species label: Family} from a dict or Series of names or Family instances."""
    from . import get_family

    if isinstance(families, pd.Series):
        families = families.to_dict()
    if not isinstance(families, dict) or not families:
        raise JSDMError("family= as a mapping must be a non-empty dict or Series {species: family}")
    out = {}
    for sp, f in families.items():
        if isinstance(f, Mixed) or (isinstance(f, str) and str(f).lower() == "mixed"):
            raise JSDMError(f"species {sp!r}: a species' family cannot itself be mixed")
        if f is None or (isinstance(f, float) and np.isnan(f)):
            raise JSDMError(f"species {sp!r} has no family (missing value in the mapping)")
        out[sp] = get_family(f)
    return out


def _key(fam):
    return (type(fam).__name__, fam.link, repr(fam))


def _groups(members):
    """Columns grouped by identical family (same class, link and settings)."""
    keys, groups = {}, []
    for j, f in enumerate(members):
        key = _key(f)
        if key not in keys:
            keys[key] = len(groups)
            groups.append({"family": f, "cols": []})
        groups[keys[key]]["cols"].append(j)
    for g in groups:
        g["cols"] = np.array(g["cols"], dtype=int)
    return groups
