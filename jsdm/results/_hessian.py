"""The analytic Hessian of the ELBO now lives in :mod:`jsdm.model.hessian` (the full Newton
phase of the fit needs it, and model/ may not import results/); re-exported here."""
from ..model.hessian import *  # noqa: F401,F403
from ..model.hessian import (HessianBlocks, cell_curvature, hessian_blocks,  # noqa: F401
                             s_channels, site_positions, species_positions)
