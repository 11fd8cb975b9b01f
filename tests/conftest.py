"""Shared fixtures (kept small: most tests build their own data)."""
import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def toy_tables():
    """(Y, X, traits): 4 sites x 3 species with NaN cells, mixed covariate dtypes,
    and X / traits rows in another order than Y."""
    Y = pd.DataFrame({"b": [1, 0, np.nan, 3], "a": [0, 5, 2, np.nan], "c": [2, np.nan, 1, 0]},
                     index=pd.Index(["s4", "s2", "s3", "s1"]))
    X = pd.DataFrame({
        "soil": pd.Categorical(["wet", "dry", "wet", "mid"], categories=["dry", "mid", "wet"],
                               ordered=True),
        "temp": [1.5, 2.0, 3.0, 4.0],
        "grazed": [True, False, True, True],
        "n_visits": [1, 2, 3, 4],
    }, index=["s1", "s2", "s3", "s4"])
    traits = pd.DataFrame({"size": [1.0, 2.0, 3.0], "guild": pd.Categorical(["p", "q", "p"])},
                          index=["c", "a", "b"])
    return Y, X, traits
