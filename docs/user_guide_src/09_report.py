"""
9. The report
=============

:meth:`~jsdm.GLLVMResults.report` writes one self-contained HTML file for a
fit: what to be careful about, the data, model and convergence, the
coefficients, the strongest associations with intervals, the ordination, the
variance partition, residual panels and a methods paragraph you can adapt.
The command line does the same from CSV files:

.. code-block:: bash

    jsdm report --example mite --out mite_report/
    jsdm fit counts.csv --covariates env.csv --family nb --num-lv 2 --out my_report/
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
fit = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                 formula="~ scale(SubsDens) + scale(WatrCont)")

# sphinx_gallery_start_ignore
# the site copies docs/_generated_extra/ into its root: the report shown below
# is the one this very build writes
import os
from pathlib import Path

here = os.getcwd()
os.makedirs(Path("..") / "_generated_extra", exist_ok=True)
os.chdir(Path("..") / "_generated_extra")
# sphinx_gallery_end_ignore
path = fit.report("mite_report.html", title="Oribatid mites: species association report")
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
# sphinx_gallery_start_ignore
os.chdir(here)
# sphinx_gallery_end_ignore

# %%
# .. raw:: html
#
#    <p><a href="../mite_report.html">Open the report in a new page</a>.</p>
#    <iframe src="../mite_report.html" style="width: 100%; height: 900px;
#            border: 1px solid #ccc;" title="jsdm report on the mite data"></iframe>
#
# Saving a fit
# ------------
# ``fit.save(path)`` writes an open, versioned format (a JSON manifest and
# NumPy arrays in one file); :func:`jsdm.load` reads it back, checks it, and
# gives the same estimates, tables and report.
import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as tmp:
    saved = fit.save(Path(tmp) / "mite.jsdm")
    back = jsdm.load(saved)
print(back.llf == fit.llf)
