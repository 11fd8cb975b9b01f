"""The cluster's joint Newton phase (``jsdm.model.distributed_newton``) assembles the same
system as the in-memory joint Newton step (``jsdm.model.newton``).

The worker tasks are plain functions of a chunk and its site parameters, so these tests call
them on chunks built in this process (no cluster): the sums over the chunks must equal the
in-memory quantities over all sites.
"""
import numpy as np
import pytest

import jsdm
from jsdm.model import distributed as dist
from jsdm.model import distributed_newton as dn
from jsdm.model.newton import _Schur, _coupling, _cross, _site_blocks, _species_blocks, \
    mv_curvature
from jsdm.model.objective import cell_eval
from jsdm.model.problem import build_problem
from jsdm.model.start import initial_params
from jsdm.model.terms.latent import gauge_moment, gauge_step


def _setup(family, row_effect=None, n=40, m=7, chunks=3, seed=5):
    com, _ = jsdm.simulate_community(n, m, num_lv=2, family=family, n_covariates=2, seed=seed)
    prob = build_problem(com, family=family, num_lv=2, row_effect=row_effect)
    rng = np.random.default_rng(seed)
    P = initial_params(prob, rng)
    pred = prob.predictor
    # away from any optimum: the right-hand side and the steps are not small
    pred.set_species_coef(P, pred.species_coef(P) + 0.1 * rng.standard_normal((prob.m, pred.ks))
                          * pred.free)
    P.a = P.a + 0.2 * rng.standard_normal(P.a.shape)
    specs = dist.specs_from_problem(prob, chunks)
    parts = []
    for spec in specs:
        ch = dist.build_chunk(spec)
        a, b = spec.row0, spec.row0 + len(spec.sites)
        Pk = dist.start_sites(ch, dist.pack_global(ch.layout, P))
        for f in dist._site_field_names(ch):
            setattr(Pk, f, np.array(getattr(P, f)[a:b], dtype=float))
        parts.append((ch, Pk, ("test", spec.index)))
    return prob, P, parts


def _init(parts, x):
    out = []
    for ch, Pk, key in parts:
        res = dn.joint_init(ch, Pk, key, x)
        out.append((ch, res.P, key))
    return out


def _in_memory(prob, P, exact):
    pred = prob.predictor
    ce = cell_eval(prob, P, 2 if P.s is not None else 1)
    cpl = _coupling(prob, P)
    if exact:
        Emv, Evv = mv_curvature(prob, P, ce)
        ce = {**ce, "Emv": Emv, "Evv": Evv}
    Xt, U = pred.species_design(P), pred.site_design(P)
    free = pred.free.astype(float)
    Hbb, gb = _species_blocks(prob, P, ce, Xt, cpl)
    D, gu = _site_blocks(prob, P, ce, U)
    Dinv = np.linalg.inv(D)
    op = _Schur(prob, ce, Xt, U, free, Hbb, Dinv, cpl)
    rhs = gb * free - op.c(op.dinv(gu))
    C = _cross(prob, ce, Xt, U, slice(0, prob.n), free, cpl)
    B = -Hbb + np.einsum("jkil,ilq,jriq->jkr", C, Dinv, C)
    return op, gu, rhs, B


@pytest.mark.parametrize("family,row_effect,exact", [("nb", None, True), ("nb", None, False),
                                                     ("poisson", "fixed", True),
                                                     ("binomial", None, True)])
def test_species_system_summed_over_chunks_equals_in_memory(family, row_effect, exact):
    prob, P, parts = _setup(family, row_effect)
    x = dist.pack_global(parts[0][0].layout, P)
    parts = _init(parts, x)
    op, gu, rhs, B = _in_memory(prob, P, exact)
    got = [dn.joint_prepare(ch, Pk, key, exact) for ch, Pk, key in parts]
    np.testing.assert_allclose(sum(g["rhs"] for g in got), rhs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sum(g["B"] for g in got), B, rtol=1e-10,
                               atol=1e-10 * np.abs(B).max())
    # the Schur products: the chunks' parts add up to -S v on the free entries
    rng = np.random.default_rng(1)
    v = rng.standard_normal(rhs.shape)
    want = op.neg_schur(v) * op.free
    prod = sum(dn.joint_product(ch, Pk, key, v) for ch, Pk, key in parts)
    np.testing.assert_allclose(prod, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
    # the sites' steps and the trial ELBO equal the in-memory joint step's
    db = 0.05 * rng.standard_normal(rhs.shape) * op.free
    du = -op.dinv(gu + op.ct(db))
    from jsdm.model.newton import _apply

    want_val = float(cell_eval(prob, _apply(prob, P, db, du, 0.5))["site"].sum())
    got_val = sum(dn.joint_trial(ch, Pk, key, db, 0.5) for ch, Pk, key in parts)
    assert got_val == pytest.approx(want_val, rel=1e-12)
    du_chunks = np.concatenate([dn._STATE[key]["du"] for _, _, key in parts])
    np.testing.assert_allclose(du_chunks, du, rtol=1e-10, atol=1e-12)
    for _, _, key in parts:
        dn._STATE.pop(key, None)


def test_gauge_moments_summed_over_chunks_give_the_in_memory_step():
    prob, P, parts = _setup("nb")
    x = dist.pack_global(parts[0][0].layout, P)
    parts = _init(parts, x)
    abar = P.a.mean(0)
    M = sum(dn.joint_moment(ch, Pk, key, abar) for ch, Pk, key in parts)
    np.testing.assert_allclose(M, gauge_moment(P, abar), rtol=1e-12)
    from jsdm.model.terms.latent import gauge_sites, gauge_species, gauge_transform

    tr = gauge_transform(P, M / prob.n)
    new = P.copy()
    gauge_species(P, new, abar, tr)
    gauge_sites(P, new, abar, tr)
    ref, _ = gauge_step(prob.predictor, P, prob.predictor.kl)
    for f in ("beta0", "theta", "a", "L"):
        np.testing.assert_allclose(getattr(new, f), getattr(ref, f), rtol=1e-12, atol=1e-14)
    for _, _, key in parts:
        dn._STATE.pop(key, None)


def test_stale_chunk_is_reported():
    """A chunk without the phase's state (re-created after a worker was lost) says so."""
    prob, P, parts = _setup("poisson")
    ch, Pk, key = parts[0]
    with pytest.raises(dn.JointStale):
        dn.joint_prepare(ch, Pk, key, False)


class _LocalCluster:
    """The chunks in this process, called as ``distributed.ClusterState.call`` calls them."""

    def __init__(self, parts, layout):
        self.parts, self.layout = parts, layout
        self.recoveries, self.token, self.x = 0, "test", None
        self.chunks = [ch for ch, _, _ in parts]
        self.specs = [ch.spec for ch in self.chunks]

    def call(self, fn, *args, per_chunk=None):
        out = []
        for k, (ch, _, key) in enumerate(self.parts):
            a = per_chunk[k] if per_chunk is not None else args
            out.append(dist.on_sites(fn, ch, key, self.x, *a))
        return out


def test_dispersion_polish_over_chunks_equals_in_memory():
    """``blocks.polish_dispersion`` and its chunked version take the same steps: same
    dispersions, ELBO and patched cell derivatives."""
    from jsdm.model.blocks import polish_dispersion

    prob, P, parts = _setup("nb", n=60, m=8)
    rng = np.random.default_rng(2)
    P.s = P.s + rng.normal(0.0, 1.5, P.s.shape)         # far from their optimum
    layout = parts[0][0].layout
    x = dist.pack_global(layout, P)
    for ch, Pk, key in parts:
        dist._SITES[key] = Pk
    parts = _init(parts, x)
    for ch, Pk, key in parts:
        dist._SITES[key] = Pk
    ce = cell_eval(prob, P, order=2)
    last = {"species": ce["species"].copy(), "gs": ce["gs"].copy(), "gss": ce["gss"].copy()}
    val = float(ce["site"].sum())
    ref, ce_ref = polish_dispersion(prob, P, ce, 1e-3)
    assert not np.allclose(ref.s, P.s)                  # the polish had work to do

    cl = _LocalCluster(parts, layout)
    cl.x = x

    def call(fn, *args, per_chunk=None):
        return dn._call(cl, fn, *args, per_chunk=per_chunk)
    call.cluster = cl

    x_new, val_new = dn._polish(call, layout, P, x, val, last, 1e-3)
    got = dist.put_global(layout, P, x_new)
    np.testing.assert_allclose(got.s, ref.s, rtol=1e-10, atol=1e-12)
    assert val_new == pytest.approx(float(ce_ref["site"].sum()), rel=1e-11)
    Gm = np.concatenate([dn._STATE[key]["ce"]["Gm"] for _, _, key in parts])
    site = np.concatenate([dn._STATE[key]["ce"]["site"] for _, _, key in parts])
    np.testing.assert_allclose(Gm, ce_ref["Gm"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(site, ce_ref["site"], rtol=1e-11)
    for _, _, key in parts:
        dn._STATE.pop(key, None)
        dist._SITES.pop(key, None)
