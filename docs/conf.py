"""Sphinx configuration of the jsdm documentation site.

Build (from the repository root; README gives the full command):

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

``-W`` turns warnings into errors and ``-n`` (nitpicky) makes every
unresolved cross-reference a warning, so the build fails on broken
references. The user guide and the examples are Python scripts that
sphinx-gallery runs at build time on the bundled data; the family pages are
generated from the family registry (``_ext/jsdm_families.py``), so a new
family appears without editing the docs.
"""
import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))        # the checkout's jsdm, also when not installed

os.environ.setdefault("MPLBACKEND", "Agg")

# autosummary writes a stub per public name and never deletes one: start afresh, so that a
# name that left the API does not linger as a broken page in an incremental build
import shutil  # noqa: E402

shutil.rmtree(HERE / "api" / "generated", ignore_errors=True)

import jsdm  # noqa: E402

project = "jsdm"
author = "the jsdm developers"
copyright = "the jsdm developers (MIT licence)"
release = version = jsdm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "jsdm_sphinx",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "screenshots", "gallery", "**/README.md", "**/GALLERY_HEADER.rst",
                    "examples_src", "user_guide_src", "_generated_topics.rst",
                    "families/generated/table.rst", "sg_execution_times.rst"]
templates_path = ["_templates"]
nitpicky = True
# types named in numpydoc "Parameters" lines are prose here (numpydoc_xref_param_type is
# off); names of other projects' objects are not resolved (no network for intersphinx)
nitpick_ignore_regex = [
    (r"py:.*", r"(pandas|pd|numpy|np|matplotlib|scipy|pathlib|formulaic|dask|collections|importlib|statsmodels)(\..*)?"),
    (r"py:.*", r"(DataFrame|Series|ndarray|Axes|Figure|Generator|Path|callable|optional)"),
    (r"py:mod", r"jsdm(\.\w+)*\._\w+"),       # private modules named in module notes
    (r"py:data", r".*"),                            # module constants are described in prose
]
suppress_warnings = ["myst.header"]

# --- autodoc / autosummary / numpydoc --------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# --- markdown pages (the topic pages in docs/*.md) -----------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# --- executed examples ---------------------------------------------------------------------
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")


def _short_warning(message, category, filename, lineno, line=None):
    """Warnings in the executed pages as "Category: message" (no build paths)."""
    return f"{category.__name__}: {message}\n"


warnings.formatwarning = _short_warning
sphinx_gallery_conf = {
    "examples_dirs": ["user_guide_src", "examples_src"],
    "gallery_dirs": ["user_guide", "auto_examples"],
    "filename_pattern": r".*\.py$",            # run every script, not only plot_*.py
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    "plot_gallery": "True",
}

# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"jsdm {version}"
html_static_path = ["_static"]
# files the executed pages write for the site (the report of user_guide/09_report)
(HERE / "_generated_extra").mkdir(exist_ok=True)
html_extra_path = ["_generated_extra"]
html_css_files = ["jsdm.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # the page's table of contents on the right, except where width matters more
    "secondary_sidebar_items": {"*": ["page-toc"], "families/*": ["page-toc"],
                                "families/generated/*": ["page-toc"], "terms/*": ["page-toc"],
                                "api/*": ["page-toc"], "coming_from_r": []},
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "coming_from_r": [], "getting_started": []}
html_context = {"default_mode": "light"}
