"""Figures and numbers of docs/prediction.md (mite data): cross-validation of six models,
the importance-sampling check, the network of direct associations.

    python docs/make_prediction_figures.py      # about 2 minutes on a shared 2-core machine
"""
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

import jsdm  # noqa: E402

OUT = Path(__file__).resolve().parent / "gallery"
FORMULA = "~ scale(SubsDens) + scale(WatrCont)"


def main():
    warnings.simplefilter("ignore", jsdm.JSDMWarning)
    com = jsdm.datasets.load_mite()
    fits = {f"nb, num_lv={d}": jsdm.gllvm(com, family="nb", num_lv=d, formula=FORMULA, seed=1)
            for d in range(4)}
    fits["nb, num_lv=2, no covariates"] = jsdm.gllvm(jsdm.Community(com.Y), family="nb",
                                                     num_lv=2, seed=1)
    fits["poisson, num_lv=2"] = jsdm.gllvm(com, family="poisson", num_lv=2, formula=FORMULA,
                                           seed=1)
    cv = jsdm.cross_validate(fits, k=5, seed=1, n_jobs=1)
    cols = ["lpd", "lpd_se", "lpd_diff", "diff_se", "lpd_marginal", "lpd_conditional", "auc",
            "tss", "auc_conditional", "tss_conditional"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(cv.table[cols].round(2))
    print("best:", cv.best, "| one-SE rule:", cv.best_one_se)
    ax = cv.plot()
    ax.figure.tight_layout()
    ax.figure.savefig(OUT / "cv_mite.png", dpi=100)
    fit = fits["nb, num_lv=2"]
    print(fit.loglik_is(n_draws=1000, seed=0))
    pc = fit.partial_correlation()
    print("graphical lasso (BIC):", pc.attrs["edges"], "edges of", 35 * 34 // 2,
          "penalty", round(pc.attrs["penalty"], 3))
    ax = fit.plot_network()
    ax.figure.savefig(OUT / "network_mite.png", dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
