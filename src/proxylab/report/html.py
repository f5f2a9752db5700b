"""The static ``index.html`` of a sweep report: figures by relative link, tables, the spec.

No scripts, no external assets: the folder can be zipped, mailed or served as it is.
"""

from __future__ import annotations

import json
import math
from html import escape

from proxylab.report.figures import short
from proxylab.report.files import write_json_atomic  # noqa: F401 (studies import it here)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
tr.diverged td { background: #fdecea; } tr.failed td { background: #fff4e0; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; max-width: 900px; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1em; font-size: 0.85em; overflow-x: auto; }
"""

# (summary key, column title) for the runs table, after the config columns
_RUN_NUMBERS = [
    ("final_val_loss", "final val loss"), ("best_val_loss", "best val loss"),
    ("init_loss", "loss at init"), ("final_train_loss", "final train loss"),
    ("final_val_acc", "final val acc"),
    ("steps_done", "steps"), ("tokens_per_s", "tokens/s"), ("max_attn_logit", "max attn logit l0"),
    ("diverged", "diverged"),
]


def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return escape(str(v))


def _table(rows: list[dict], cols: list[tuple[str, str]], left: set[str] = frozenset(),
           row_class: str | None = None) -> str:
    head = "".join(f'<th class="{"l" if k in left else ""}">{escape(t)}</th>' for k, t in cols)
    body = []
    for r in rows:
        cls = f' class="{escape(str(r.get(row_class)))}"' if row_class else ""
        cells = "".join(f'<td class="{"l" if k in left else ""}">{_num(r.get(k))}</td>'
                        for k, _ in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_index(summary: dict, captions: dict[str, str]) -> str:
    """HTML text for ``summary`` (the JSON-safe dict that ``make_report`` writes)."""
    name = summary["sweep"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<title>proxylab report: {escape(name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Sweep <code>{escape(name)}</code></h1>"]
    counts = ", ".join(f"{n} {escape(s)}" for s, n in summary["counts"].items() if n)
    parts.append(f"<p>{summary['n_runs']} runs: {counts or 'none'}. Varied axes: "
                 f"{escape(', '.join(summary['varied_axes']) or '(none)')}; seeds are averaged. "
                 f"Numbers behind every figure: <a href='summary.json'>summary.json</a>.</p>")
    for key, file in summary["figures"].items():
        parts.append(f"<figure><img src='{escape(file)}' alt='{escape(key)}'>"
                     f"<figcaption>{escape(captions.get(key, ''))}</figcaption></figure>")
    gk = summary["group_keys"]
    # optimal_lr and lr_sensitivity list the same groups in the same (sorted) order
    groups = [{**o, **s} for o, s in zip(summary.get("optimal_lr") or [],
                                         summary.get("lr_sensitivity") or [])
              if all(o.get(k) == s.get(k) for k in gk)]
    if groups:
        cols = [(k, short(k)) for k in gk] + [
            ("lr_argmin", "best LR (grid)"), ("lr_opt", "best LR (fit)"), ("method", "fit"),
            ("at_edge", "at grid edge"), ("best_loss", "ℓ*"), ("init_loss", "ℓ0"),
            ("lr_sensitivity", "LR sensitivity"), ("n_lr", "LRs"),
            ("n_lr_diverged", "LRs all diverged")]
        parts.append("<h2>Optimal LR and LR sensitivity per configuration</h2>")
        parts.append(f"<p>{escape(summary['conventions']['lr_sensitivity'])}</p>")
        parts.append(_table(groups, cols, left=set(gk) | {"method"}))
    runs = summary["runs"]
    if runs:
        cfg = [c for c in runs[0] if "." in c]
        # columns that are empty in every run (no accuracy, no attention) are left out
        numbers = [(k, t) for k, t in _RUN_NUMBERS if any(r.get(k) is not None for r in runs)]
        cols = ([("run_id", "run"), ("status", "status")] + [(c, short(c)) for c in cfg]
                + numbers)
        parts.append("<h2>Runs</h2>")
        parts.append(_table(runs, cols, left={"run_id", "status"}, row_class="status"))
    parts.append("<h2>Sweep spec</h2>")
    parts.append(f"<pre>{escape(json.dumps(summary.get('spec'), indent=2, sort_keys=True))}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
