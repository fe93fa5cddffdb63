"""Looking back at runs: side-by-side comparison, terminal charts and the static HTML report.

Core code (no printing, no typer/rich): `compare.py` builds the comparison and metric series,
`termchart.py` draws a line chart as styled text, `html.py` writes the self-contained report.
"""
