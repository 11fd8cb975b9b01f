"""Write small saved fits with earlier jsdm versions, to test that they still load.

Run once per version with that version's package first on the path (see
``tests/test_terms_io.py``)::

    git archive 5e42c47 jsdm | tar -x -C /tmp/jsdm_v1   # format version 1 (jsdm before issue 13)
    python tests/data/make_legacy_fits.py --src /tmp/jsdm_v1 --tag v1
    git archive 48eee2b jsdm | tar -x -C /tmp/jsdm_v2   # format version 2 (checksums, issue 13)
    python tests/data/make_legacy_fits.py --src /tmp/jsdm_v2 --tag v2

Each run writes ``legacy_<tag>_<model>.jsdm`` for the mite data's first 30 sites and
10 most prevalent species: NB with 2 latent variables, with random row effects
("randomrow"), and with 2 covariates and fixed row effects ("fixedrow").
"""
import argparse
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--tag", required=True)
    args = ap.parse_args(argv)
    sys.path.insert(0, args.src)
    import jsdm

    com = jsdm.datasets.load_mite()
    Y = com.Y.iloc[:30]
    Y = Y[(Y > 0).mean().sort_values(ascending=False).index[:10]]
    X = com.X.iloc[:30][["SubsDens", "WatrCont"]].astype(float)
    X = (X - X.mean()) / X.std()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {"randomrow": jsdm.gllvm(Y, family="nb", num_lv=2, row_effect="random", n_init=1,
                                        seed=0),
                "fixedrow": jsdm.gllvm(Y, X, family="nb", num_lv=2, row_effect="fixed", n_init=1,
                                       seed=0)}
    for name, fit in fits.items():
        path = HERE / f"legacy_{args.tag}_{name}.jsdm"
        fit.save(path)
        print(path.name, fit.llf, fit.converged, jsdm.__file__)


if __name__ == "__main__":
    main()
