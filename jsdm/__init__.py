"""jsdm: joint species distribution models (GLLVMs) by exact variational approximation."""
from . import exceptions
from .exceptions import ConvergenceWarning, DataWarning, HessianWarning, JSDMError, JSDMWarning
from .families import get_family
from .data import Community, SimulationTruth, datasets, read_long, read_wide, simulate_community
from .api import gllvm
from .results.fitted import GLLVMResults
from .results.io import load
from .results.anova import anova, select_num_lv
from .results.profile import profile_power
from .results.crossval import cross_validate

__version__ = "0.1.0"
