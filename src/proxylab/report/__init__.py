"""Figures and a static HTML report from stored runs (plotting only; numbers come from
:mod:`proxylab.analysis`).

``make_report(store, sweep_name, out_dir)`` writes PNGs, ``index.html`` and
``summary.json``; :mod:`proxylab.report.figures` has one function per figure for studies.
"""

from proxylab.report.build import make_report, sweep_summary
from proxylab.report.files import json_safe, write_json_atomic

__all__ = ["json_safe", "make_report", "sweep_summary", "write_json_atomic"]
