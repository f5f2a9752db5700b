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
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
tr.diverged td { background: #fdecea; } tr.failed td { background: #fff4e0; }
td.reproduced { color: #176f2c; font-weight: 600; } td.not_reproduced { color: #b00020;
  font-weight: 600; } td.inconclusive { color: #8a5a00; font-weight: 600; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #444; max-width: 900px; }
figcaption .q { font-weight: 600; color: #222; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1em; font-size: 0.85em; overflow-x: auto;
      white-space: pre-wrap; word-break: break-word; }
details { margin: 0.3em 0; } summary { cursor: pointer; color: #335; }
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
    # a wide table scrolls inside its own box: the page itself never scrolls sideways
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def page(title: str, body: list[str]) -> str:
    """A whole HTML page: no scripts, no external assets, fits a 1280 px window."""
    return "\n".join([f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                      f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                      f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
                      *body, "</body></html>\n"])


def figure(src: str, question: str, detail: str = "", numbers: str = "") -> str:
    """One figure: the image, the question it answers, what it shows, the numbers behind it."""
    return (f"<figure><img src='{escape(src)}' alt='{escape(question)}'><figcaption>"
            f"<span class='q'>{escape(question)}</span> {escape(detail)}"
            + (f"<br>{numbers}" if numbers else "") + "</figcaption></figure>")


def _split_caption(caption: str) -> tuple[str, str]:
    """'Question? What is drawn.' -> ('Question?', 'What is drawn.')."""
    q, mark, rest = caption.partition("?")
    return (q + mark, rest.strip()) if mark else (caption, "")


# which summary.json keys (and which table on the page) hold each sweep figure's numbers
_FIGURE_NUMBERS = {
    "loss_curves": ("runs", "runs"),
    "loss_vs_lr": ("lr_curves, optimal_lr, lr_sensitivity", "optimal-lr"),
    "attn_logit_vs_step": ("runs[].max_attn_logit", "runs"),
    "attn_logit_vs_lr": ("attn_logit_vs_lr", "runs"),
}


def render_index(summary: dict, captions: dict[str, str]) -> str:
    """HTML text for ``summary`` (the JSON-safe dict that ``make_report`` writes): the
    answer table first (optimal LR and LR sensitivity), then one figure per question with
    the numbers behind it, then every run, then the spec."""
    name = summary["sweep"]
    parts = [f"<h1>Sweep <code>{escape(name)}</code></h1>"]
    counts = ", ".join(f"{n} {escape(s)}" for s, n in summary["counts"].items() if n)
    parts.append(f"<p>{summary['n_runs']} runs: {counts or 'none'}. Varied axes: "
                 f"{escape(', '.join(summary['varied_axes']) or '(none)')}; seeds are averaged. "
                 f"Numbers behind every figure: <a href='summary.json'>summary.json</a>.</p>")
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
        parts.append("<h2 id='optimal-lr'>Optimal LR and LR sensitivity per configuration</h2>")
        parts.append(f"<p>{escape(summary['conventions']['lr_sensitivity'])}</p>")
        parts.append(_table(groups, cols, left=set(gk) | {"method"}))
    if summary["figures"]:
        parts.append("<h2>Figures</h2>")
    for key, file in summary["figures"].items():
        question, detail = _split_caption(captions.get(key, key))
        keys, anchor = _FIGURE_NUMBERS.get(key, ("", ""))
        numbers = (f"Numbers: <a href='summary.json'>summary.json</a> → "
                   f"<code>{escape(keys)}</code>; table <a href='#{anchor}'>below</a>."
                   if keys else "")
        parts.append(figure(file, question, detail, numbers))
    runs = summary["runs"]
    parts.append("<h2 id='runs'>Runs</h2>")
    if runs:
        cfg = [c for c in runs[0] if "." in c]
        # columns that are empty in every run (no accuracy, no attention) are left out
        numbers = [(k, t) for k, t in _RUN_NUMBERS if any(r.get(k) is not None for r in runs)]
        cols = ([("run_id", "run"), ("status", "status")] + [(c, short(c)) for c in cfg]
                + numbers)
        parts.append(_table(runs, cols, left={"run_id", "status"}, row_class="status"))
    else:
        parts.append("<p>none</p>")
    parts.append("<h2>Sweep spec</h2>")
    parts.append(f"<pre>{escape(json.dumps(summary.get('spec'), indent=2, sort_keys=True))}</pre>")
    return page(f"proxylab report: {name}", parts)


# ---- a study's index ------------------------------------------------------------------
_HEADLINE = ("estimate", "interval", "margin", "direction", "unit", "n")


def _fmt_value(v) -> str:
    if isinstance(v, list) and len(v) <= 12 and all(not isinstance(x, (list, dict)) for x in v):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    if isinstance(v, (list, dict)):
        return escape(json.dumps(v, default=str))
    return _num(v)


def _effect(ev: dict) -> str:
    """'0.243 [0, 0.243] vs > 0.3 log2 LR per doubling (n = 3)' from a verdict's evidence."""
    est, iv, margin = ev.get("estimate"), ev.get("interval"), ev.get("margin")
    if est is None and not iv:
        return "–"
    op = {"greater": "&gt;", "less": "&lt;", "within": "|·| ≤"}.get(ev.get("direction"), "vs")
    text = _num(est)
    if isinstance(iv, list) and len(iv) == 2:
        text += f" [{_num(iv[0])}, {_num(iv[1])}]"
    if margin is not None:
        text += f"; claim: {op} {_num(margin)}"
    if ev.get("unit"):
        text += f" {escape(str(ev['unit']))}"
    return text


def verdict_table(verdicts: list[dict]) -> str:
    """Claim, status, effect with its interval against the margin, n, reason; the full
    evidence folds out under each claim."""
    rows = []
    for v in verdicts:
        ev = v.get("evidence") or {}
        rest = {k: val for k, val in ev.items() if k not in _HEADLINE}
        details = ("<details><summary>evidence</summary><table>"
                   + "".join(f"<tr><td class='l'>{escape(str(k))}</td><td class='l'>"
                             f"{_fmt_value(val)}</td></tr>" for k, val in rest.items())
                   + "</table></details>") if rest else ""
        status = str(v.get("status", ""))
        rows.append(f"<tr><td class='l'>{escape(str(v.get('claim', '')))}"
                    + (f"<br><small>{escape(str(ev['effect']))}</small>" if ev.get("effect") else "")
                    + f"</td><td class='l {escape(status)}'>{escape(status.replace('_', ' '))}</td>"
                    f"<td class='l'>{_effect(ev)}</td><td>{_num(ev.get('n'))}</td>"
                    f"<td class='l'>{escape(str(v.get('reason', '')))}{details}</td></tr>")
    return ("<div class='scroll'><table><tr><th class='l'>claim</th><th class='l'>verdict</th>"
            "<th class='l'>effect [90% interval]; claim</th><th>n</th><th class='l'>reason</th>"
            f"</tr>{''.join(rows)}</table></div>")


def render_study_index(name: str, size: str, doc: str, summary: dict,
                       figures: dict[str, dict]) -> str:
    """A study's ``index.html``: the verdict table first, then one figure per question with
    the numbers behind it (``figures``: file -> {"question", "detail", "numbers"}), then
    links to each sweep's report."""
    title = f"Study {name}" + ("" if size == "full" else f" ({size})")
    parts = [f"<h1>{escape(title)}</h1>", f"<p>{escape(doc.strip())}</p>" if doc else "",
             "<h2>Verdicts</h2>", verdict_table(summary.get("verdicts") or []),
             "<p>Every number here is in <a href='summary.json'>summary.json</a>.</p>"]
    if figures:
        parts.append("<h2>Figures</h2>")
    for file, note in figures.items():
        nums = note.get("numbers") or {}
        table = ("<table>" + "".join(f"<tr><td class='l'>{escape(str(k))}</td>"
                                     f"<td class='l'>{_fmt_value(v)}</td></tr>"
                                     for k, v in nums.items()) + "</table>") if nums else ""
        parts.append(figure(file, note.get("question") or file, note.get("detail", ""),
                            ("Numbers behind it (summary.json → <code>figures</code>):" + table)
                            if table else ""))
    parts.append("<h2>Sweep reports</h2><ul>" + "".join(
        f"<li><a href='{escape(href)}'>{escape(s)}</a></li>"
        for s, href in (summary.get("reports") or {}).items()) + "</ul>")
    return page(title, parts)


def study_figures(out_dir, returned) -> dict[str, dict]:
    """A study's figures as ``{file: {"question", "detail", "numbers"}}``.

    ``returned`` is what the study's ``figures(store, specs, out_dir)`` gave back: None, or
    ``{file: "Question? What is drawn."}``, or ``{file: {"question": ..., "detail": ...,
    "numbers": {label: value}}}``. PNGs in ``out_dir`` it does not describe are still shown,
    named after their file, with the verdict evidence as their numbers.
    """
    from pathlib import Path  # noqa: PLC0415

    notes: dict[str, dict] = {}
    for file, note in (returned or {}).items():
        if isinstance(note, str):
            q, detail = _split_caption(note)
            note = {"question": q, "detail": detail}
        notes[str(file)] = {"question": str(note.get("question") or file),
                            "detail": str(note.get("detail") or ""),
                            "numbers": dict(note.get("numbers") or {})}
    for png in sorted(Path(out_dir).glob("*.png")):
        notes.setdefault(png.name, {"question": png.stem.replace("_", " "),
                                    "detail": "(numbers: the verdict evidence above)",
                                    "numbers": {}})
    return {f: n for f, n in notes.items() if (Path(out_dir) / f).is_file()}
