"""
1. Community data
=================

A joint species distribution model starts from three tables:

- the **response** ``Y``: sites x species (counts, presence/absence, cover
  classes, biomass);
- site **covariates** ``X``: sites x environmental variables;
- optionally species **traits**: species x traits.

:class:`jsdm.Community` holds them together, matched by label, and checks
them: duplicated or mismatched labels, text in the counts and empty species
are reported with the labels involved and what to do.
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
com

# %%
# The tables are pandas DataFrames with the site and species labels.
com.Y.iloc[:5, :6]

# %%
com.X.head()

# %%
# Prevalence (share of sites where a species is present) is the first thing
# to look at: very rare species carry little information on associations.
com.prevalence.sort_values().head()

# %%
# Long format
# -----------
# Models written in lme4/glmmTMB syntax, and many plots, use the *long*
# table: one row per site x species, with the site covariates joined.
long = com.to_long(response="count")
long.head()

# %%
# and back: ``Community.from_long`` pivots a long table to the wide one.
jsdm.Community.from_long(long, response="count").equals(com)

# %%
# Your own data
# -------------
# ``jsdm.read_wide("counts.csv", covariates="env.csv", traits="traits.csv")``
# reads wide CSV files (rows matched by label);
# ``jsdm.read_long("long.csv", site=..., species=..., response=...)`` reads a
# long one. Both return a :class:`~jsdm.Community`.
