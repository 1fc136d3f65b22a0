"""Reports of a run: the summary numbers (summary.py), the terminal table (text.py) and the
JSON report (json_report.py). All are computed from a RunResult; none re-simulates."""
