"""The species association report: one self-contained HTML file with embedded figures.

>>> fit.report("mite_report.html")                     # doctest: +SKIP
>>> from jsdm.report import write_report
>>> write_report(fit, "report.html", select_table=sel)  # doctest: +SKIP
"""
from .writer import SECTIONS, write_report

__all__ = ["write_report", "SECTIONS"]
