"""Render screenshots of reports with headless Chromium (a documentation tool).

Usage (from the repository root, with jsdm installed and the Debian package
``chromium`` available)::

    python docs/report_screenshot.py                 # -> docs/mite_report.png
    python docs/report_screenshot.py --height 4000 --keep-html /tmp/mite
    python docs/report_screenshot.py --case issue12  # -> docs/screenshots/*.png

It runs ``jsdm report --example mite`` into a temporary folder (or
``--keep-html DIR``), measures the page height, then asks Chromium for a
screenshot of the whole of report.html (or of ``--height`` pixels).

``--case issue12`` writes the reports of issue 12 with ``jsdm fit`` (the
command line's defaults: covariates standardised, ``--prior-sd 5``) on the
shapes of tests/_shapes.py: ``spider_1lv`` (simulated 28 x 12 NB, one latent
variable), ``bci_2lv`` (simulated 50 x 225 NB, 40% singletons, 2 latent
variables) and ``aravo_pa`` (the real aravo data as presence/absence, Snow
and Slope, 2 latent variables), and saves each as
docs/screenshots/<name>.png (full page, reduced to 256 colours to keep the
files small). Not used by the tests.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium():
    """Path of a Chromium executable, or exit with a hint."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("report_screenshot: no Chromium found; install it (Debian: apt-get install -y chromium)")


def make_report(out_dir, extra_args=()):
    """Write the mite report into ``out_dir`` with the jsdm command line; return report.html."""
    from jsdm.cli import main

    status = main(["report", "--example", "mite", "--out", str(out_dir), "--quiet", *extra_args])
    if status != 0:
        sys.exit(f"report_screenshot: jsdm report failed with status {status}")
    return Path(out_dir) / "report.html"


def _chromium(args, timeout=120, capture=False):
    """Run headless Chromium with a throw-away profile; return its stdout when ``capture``."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        res = subprocess.run(cmd, check=True, timeout=timeout, stderr=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if capture else subprocess.DEVNULL, text=True)
    return res.stdout if capture else None


def page_height(html, width=1280):
    """Height in CSS pixels of the rendered report (measured on a copy with a tiny script)."""
    probe = html.with_name("_height_probe.html")
    script = ("<script>window.addEventListener('load', function () {"
              "document.title = 'H=' + document.documentElement.scrollHeight; });</script>")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                     encoding="utf-8")
    try:
        dom = _chromium(["--virtual-time-budget=10000", f"--window-size={width},1000", "--dump-dom",
                         probe.resolve().as_uri()], capture=True)
    finally:
        probe.unlink()
    match = re.search(r"<title>H=(\d+)</title>", dom)
    return int(match.group(1)) if match else None


def screenshot(html, png, width=1280, height=None):
    """Render ``html`` to ``png``; ``height=None`` captures the whole page."""
    height = height or min((page_height(html, width) or 4000) + 16, 16000)
    _chromium([f"--screenshot={Path(png).resolve()}", f"--window-size={width},{height}",
               html.resolve().as_uri()])
    if not Path(png).is_file():
        sys.exit("report_screenshot: Chromium wrote no screenshot")
    return Path(png)


ISSUE12 = {"spider_1lv": ("spider_like", ["--num-lv", "1", "--family", "nb"]),
           "bci_2lv": ("bci_like", ["--num-lv", "2", "--family", "nb"]),
           "aravo_pa": ("aravo_pa", ["--num-lv", "2", "--family", "binomial",
                                     "--formula", "~ Snow + Slope"])}


def issue12(out_dir, width=1280):
    """The three reports of issue 12 and their screenshots in ``out_dir``."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import _shapes
    from jsdm.cli import main as jsdm_main

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, args) in ISSUE12.items():
            com, _ = _shapes.SHAPES[shape]()
            y, x = Path(tmp) / f"{name}_Y.csv", Path(tmp) / f"{name}_X.csv"
            com.Y.to_csv(y, index_label="site")
            extra = []
            if com.X is not None:
                com.X.to_csv(x, index_label="site")
                extra = ["--covariates", str(x)]
            title = {"spider_1lv": "Spider-shaped community (simulated), one latent variable",
                     "bci_2lv": "Barro-Colorado-shaped community (simulated, 40% singletons)",
                     "aravo_pa": "Aravo alpine plants (Choler 2005), presence/absence"}[name]
            status = jsdm_main(["fit", str(y), *extra, *args, "--out", str(Path(tmp) / name),
                                "--quiet", "--title", title])
            if status != 0:
                sys.exit(f"report_screenshot: jsdm fit failed for {name} with status {status}")
            png = screenshot(Path(tmp) / name / "report.html", out_dir / f"{name}.png", width)
            _shrink(png)
            print(f"wrote {png}")


def _shrink(png):
    """Reduce a screenshot to a 256-colour palette (text stays sharp; files get ~4x smaller)."""
    from PIL import Image

    im = Image.open(png).convert("RGB")
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main(argv=None):
    """Command line of this script (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["mite", "issue12"], default="mite")
    parser.add_argument("--png", default=str(HERE / "mite_report.png"), help="screenshot file")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=None,
                        help="window height in pixels (default: the whole page)")
    parser.add_argument("--keep-html", default=None, metavar="DIR",
                        help="write the report into DIR (kept) instead of a temporary folder")
    args = parser.parse_args(argv)
    if args.case == "issue12":
        issue12(HERE / "screenshots", args.width)
        return
    if args.keep_html:
        Path(args.keep_html).mkdir(parents=True, exist_ok=True)
        html = make_report(args.keep_html)
        png = screenshot(html, args.png, args.width, args.height)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            html = make_report(tmp)
            png = screenshot(html, args.png, args.width, args.height)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
