"""Build an offline HTML template for `dvc plots show/diff --html-template`.

DVC's default page loads vega, vega-lite and vega-embed from a CDN and renders
blank without internet. This template inlines the three libraries (installed
from the npm registry by `npm ci` in node/), and leaves out DVC's `{scripts}`
placeholder so that no CDN script tag is added.

Usage: python scripts/build_plots_template.py node/node_modules build/plots-template.html
"""

import sys
from pathlib import Path

LIBRARIES = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")

HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>tlpipe plots</title>
<style>body { font-family: sans-serif; } table { border-spacing: 15px; }</style>
"""
BODY = """</head>
<body>
{plot_divs}
</body>
</html>
"""


def main(node_modules: Path, output: Path) -> None:
    scripts = []
    for library in LIBRARIES:
        source = (node_modules / library).read_text(encoding="utf-8")
        if "</script" in source:  # would end the inline <script> element early
            raise SystemExit(f"{node_modules / library}: contains '</script', cannot be inlined")
        scripts.append(f"<script>\n{source}\n</script>\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(HEAD + "".join(scripts) + BODY, encoding="utf-8")
    partial.replace(output)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
