"""Write the plot gallery (docs/gallery/*.png) from the oribatid mite data.

    python docs/make_gallery.py [--out docs/gallery]

Models: negative binomial GLLVMs with two latent variables on the 70 x 35 mite
counts, (a) with SubsDens and WatrCont standardised as R's scale() does, and
(b) without covariates (an unconstrained ordination), both seeded.
"""
import argparse
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import jsdm  # noqa: E402


def fits():
    """(model with two covariates, model without covariates, full site table)."""
    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]].astype(float)
    X = (X - X.mean()) / X.std(ddof=1)
    with_x = jsdm.gllvm(com.Y, X, family="negative_binomial", num_lv=2, seed=1)
    no_x = jsdm.gllvm(com, family="negative_binomial", num_lv=2, seed=1, formula="~ 1")
    return with_x, no_x, com.X


def save(fig, out, name, dpi=110):
    path = out / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", jsdm.JSDMWarning)
        fit, fit0, env = fits()
    print(f"fitted in {time.perf_counter() - t0:.1f} s: {fit}\n  {fit0}")
    ax = fit0.plot_ordination(color="WatrCont", covariate_arrows=False, ellipses=True)
    ax.set_title("Mite: unconstrained NB GLLVM, sites coloured by water content (95% ellipses)")
    save(ax.figure, out, "ordination_unconstrained.png")
    ax = fit.plot_ordination(color=env["Topo"].rename("Topo"))
    ax.set_title("Mite: residual ordination after SubsDens + WatrCont (NB, 2 LVs)")
    save(ax.figure, out, "ordination_residual.png")
    ax = fit.plot_associations()
    save(ax.figure, out, "associations.png")
    ax = fit.plot_associations(only_significant=True)
    save(ax.figure, out, "associations_significant.png")
    save(fit.plot_residuals(seed=1), out, "residuals.png")
    save(fit.plot_coefficients(), out, "coefficients.png")
    ax = fit.plot_variance_partition(groups="terms", sort=True)
    save(ax.figure, out, "variance_partition.png")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "gallery")
    main(ap.parse_args().out)
