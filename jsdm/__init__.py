"""jsdm: joint species distribution models (GLLVMs) by exact variational approximation."""
from . import exceptions
from .exceptions import ConvergenceWarning, DataWarning, HessianWarning, JSDMError, JSDMWarning
from .families import get_family
from .data import Community, SimulationTruth, datasets, read_long, read_wide, simulate_community
from .api import compare_ordinations, gllvm
from .results.fitted import GLLVMResults
from .results.io import load
from .results.anova import anova
from .results.crossval import cross_validate
from .selection import Selection, select_num_lv
from .power import PowerProfile, profile_power

__version__ = "0.2.0.dev0"   # the API changes of issue 19 (deprecations say "before jsdm 0.2")

# the public API (docs/api.rst documents these; tests/test_docstrings.py checks them)
__all__ = [
    "Community", "ConvergenceWarning", "DataWarning", "GLLVMResults", "HessianWarning",
    "JSDMError", "JSDMWarning", "PowerProfile", "Selection", "SimulationTruth", "anova",
    "compare_ordinations", "cross_validate", "datasets",
    "exceptions", "get_family", "gllvm", "load", "profile_power", "read_long", "read_wide",
    "select_num_lv",
    "simulate_community",
]
