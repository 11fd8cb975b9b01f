"""Plots of fitted GLLVMs. Each function takes a fitted object and returns the
matplotlib Axes it drew on (``ax=`` to draw on an existing one) or, for
multi-panel plots, the Figure. matplotlib is imported inside the functions.

Artists carry a ``gid`` naming what they show ("sites", "species",
"ellipse", "covariate", ...), so callers and tests can find them.
"""
from .associations import plot_associations, plot_variance_partition
from .coefficients import plot_coefficients
from .cv import plot_cv
from .fourth_corner import plot_fourth_corner
from .network import plot_network
from .ordination import plot_ordination
from .residuals import plot_residuals

__all__ = ["plot_associations", "plot_coefficients", "plot_cv", "plot_fourth_corner",
           "plot_network", "plot_ordination",
           "plot_residuals", "plot_variance_partition"]
