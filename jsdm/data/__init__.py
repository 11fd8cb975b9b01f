"""Community data: the Community container, wide <-> long reshaping, readers,
bundled data sets and the GLLVM simulator. Everything about tables; no statistics."""
from . import datasets
from .community import Community
from .io import read_long, read_wide
from .simulate import SimulationTruth, simulate_community

__all__ = ["Community", "SimulationTruth", "datasets", "read_long", "read_wide",
           "simulate_community"]
