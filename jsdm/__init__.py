"""jsdm: joint species distribution models (GLLVMs) by exact variational approximation."""
from . import exceptions
from .exceptions import ConvergenceWarning, DataWarning, HessianWarning, JSDMError, JSDMWarning
from .families import get_family

__version__ = "0.1.0"
