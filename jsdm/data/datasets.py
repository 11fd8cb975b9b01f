"""Bundled real data sets and the simulator.

The CSV files live in ``jsdm/data/files`` (see PROVENANCE.md there for source,
citation and licence) and are read through :mod:`importlib.resources`, so
they load from an installed wheel as well as from a source checkout.
"""
from importlib import resources

import pandas as pd

from .community import Community
from .io import NA_VALUES
from .simulate import SimulationTruth, simulate_community

__all__ = ["load_mite", "load_dune", "load_aravo", "simulate_community", "SimulationTruth",
           "data_path"]


def data_path(name):
    """Where a bundled data file is, e.g. ``data_path("mite.csv")``.

    Parameters
    ----------
    name : str
        File name in ``jsdm/data/files/`` (see PROVENANCE.md there).

    Returns
    -------
    importlib.resources.abc.Traversable
        Open it with ``.open()``; ``str()`` gives a path when installed as files.
    """
    return resources.files("jsdm.data").joinpath("files", name)


def _read(name):
    with data_path(name).open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh, index_col=0, dtype={0: str}, keep_default_na=False,
                         na_values=NA_VALUES)
    df.index = df.index.astype(str)
    return df


def load_mite():
    """Oribatid mites in Sphagnum peat cores (Borcard & Legendre 1994).

    70 soil cores x 35 mite species (counts) from a peat blanket around Lac
    Geai, Quebec.

    Returns
    -------
    Community
        Y: counts, shape (70, 35), sites "1".."70". X: ``SubsDens`` (substrate
        density, g/L), ``WatrCont`` (water content, g/L), ``Substrate``
        (Categorical, 7 levels), ``Shrub`` (ordered Categorical
        None < Few < Many), ``Topo`` (Categorical Blanket, Hummock).

    References
    ----------
    Borcard, D. & Legendre, P. (1994) Environmental control and spatial
    structure in ecological communities: an example using oribatid mites
    (Acari, Oribatei). Environmental and Ecological Statistics 1, 37-61.
    """
    Y = _read("mite.csv")
    env = _read("mite.env.csv")
    env["Substrate"] = pd.Categorical(env["Substrate"])
    env["Shrub"] = pd.Categorical(env["Shrub"], categories=["None", "Few", "Many"], ordered=True)
    env["Topo"] = pd.Categorical(env["Topo"], categories=["Blanket", "Hummock"])
    return Community(Y, env)


def load_dune():
    """Dutch dune meadow vegetation (Jongman, ter Braak & van Tongeren 1987).

    20 sites x 30 plant species, cover classes 0-9 (ordinal abundance).

    Returns
    -------
    Community
        Y: cover classes, shape (20, 30), sites "1".."20". X: ``A1`` (thickness
        of soil A1 horizon, cm), ``Moisture`` (ordered "1" < "2" < "4" < "5"),
        ``Management`` (Categorical BF, HF, NM, SF), ``Use`` (ordered
        Hayfield < Haypastu < Pasture), ``Manure`` (ordered "0" < ... < "4").

    References
    ----------
    Jongman, R.H., ter Braak, C.J.F. & van Tongeren, O.F.R. (1987) Data
    Analysis in Community and Landscape Ecology. Pudoc, Wageningen.
    """
    Y = _read("dune.csv")
    env = _read("dune.env.csv")
    for name, levels in (("Moisture", ["1", "2", "4", "5"]),
                         ("Use", ["Hayfield", "Haypastu", "Pasture"]),
                         ("Manure", ["0", "1", "2", "3", "4"])):
        env[name] = pd.Categorical(env[name].astype(str), categories=levels, ordered=True)
    env["Management"] = pd.Categorical(env["Management"], categories=["BF", "HF", "NM", "SF"])
    return Community(Y, env)


def load_aravo():
    """Alpine plants of the Aravo valley, Valloire, France (Choler 2005; ade4's ``aravo``).

    75 sites x 82 species, abundance (cover) classes 0-5 (ordinal), with 6 site
    variables and 8 species traits.

    Returns
    -------
    Community
        Y: cover classes 0-5, shape (75, 82), sites "AR07", ..., species "Agro.rupe", ...
        X: ``Aspect`` (numeric, as in ade4), ``Slope`` (degrees), ``Form``
        (microtopographic landform index, ordered "1" < ... < "5"), ``PhysD``
        (physical disturbance, %), ``ZoogD`` (zoogenic disturbance, ordered no <
        some < high), ``Snow`` (mean snowmelt date, Julian day, 1997-1999).
        traits: ``full_name`` (the species' name; text) and ``Height`` (cm),
        ``Spread`` (cm), ``Angle``, ``Area``, ``Thick``, ``SLA``, ``N_mass``, ``Seed``.

    References
    ----------
    Choler, P. (2005) Consistent shifts in Alpine plant traits along a
    mesotopographical gradient. Arctic, Antarctic, and Alpine Research 37, 444-453.
    Distributed with the R package ade4 (Dray, S. & Dufour, A.-B. (2007) The ade4
    package: implementing the duality diagram for ecologists. Journal of
    Statistical Software 22(4), 1-20).
    """
    Y = _read("aravo.csv")
    env = _read("aravo.env.csv")
    env["Form"] = pd.Categorical(env["Form"].astype(str), categories=["1", "2", "3", "4", "5"],
                                 ordered=True)
    env["ZoogD"] = pd.Categorical(env["ZoogD"], categories=["no", "some", "high"], ordered=True)
    traits = _read("aravo.traits.csv")
    return Community(Y, env, traits)
