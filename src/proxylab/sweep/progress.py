"""Live progress of a sweep: per-run status, steps/s and ETA, drawn by the driver.

On a terminal the block of lines is redrawn in place (at most ~4 times a second); in a log
file (not a TTY) one line is printed when a run starts or ends, plus a summary every 15 s.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass


def axis_labels(axes: list[str]) -> dict[str, str]:
    """Each dotted axis key -> its shortest trailing part that no other axis shares:
    ``optim.lr`` -> ``lr``, but ``optim.name`` and ``schedule.name`` keep their sections."""
    out = {}
    for key in axes:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(o != key and (o == label or o.endswith("." + label)) for o in axes):
                break
        out[key] = label
    return out


def _value(flat: dict, key: str):
    if key in flat:
        return flat[key]
    if key.startswith("optim.extra."):            # extra settings live in one dict
        return flat.get("optim.extra", {}).get(key[len("optim.extra."):])
    return None


def run_label(cfg, axes: list[str]) -> str:
    """``lr=0.003 width=64``: the run's value on each axis, labelled without ambiguity."""
    flat, labels = cfg.flat(), axis_labels(axes)
    parts = []
    for k in axes:
        v = _value(flat, k)
        parts.append(f"{labels[k]}={v:g}" if isinstance(v, float) else f"{labels[k]}={v}")
    return " ".join(parts)


@dataclass
class _RunLine:
    label: str
    status: str = "queued"
    step: int = 0
    total: int = 0
    t_start: float = 0.0
    t_last: float = 0.0
    note: str = ""

    def rate(self) -> float:
        dt = self.t_last - self.t_start
        return self.step / dt if dt > 0 and self.step else 0.0


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, labels: dict[str, str], steps: dict[str, int], *, stream=None,
                 enabled: bool = True, skipped: int = 0):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lines = {rid: _RunLine(labels[rid], total=steps[rid]) for rid in labels}
        # labels are shown whole up to 72 characters (full keys where suffixes are ambiguous)
        self.label_width = min(72, max((len(v) for v in labels.values()), default=0))
        self.skipped = skipped
        self.t0 = time.monotonic()
        self._drawn = 0
        self._last_draw = 0.0
        self._last_log = time.monotonic()

    # ---- events ----------------------------------------------------------------
    def started(self, rid: str) -> None:
        ln = self.lines[rid]
        ln.status, ln.t_start = "running", time.monotonic()
        ln.t_last = ln.t_start
        self._log(f"start  {rid}  {ln.label}")
        self._draw()

    def step(self, rid: str, step: int, total: int) -> None:
        ln = self.lines[rid]
        ln.step, ln.total, ln.t_last = step, total, time.monotonic()
        self._draw()

    def finished(self, rid: str, status: str, note: str = "") -> None:
        ln = self.lines[rid]
        ln.status, ln.note, ln.t_last = status, note, time.monotonic()
        self._log(f"{status:<8} {rid}  {ln.label}  {note}")
        self._draw(force=True)

    def close(self) -> None:
        self._draw(force=True)
        if self.enabled and not self.tty:
            print(self._header(), file=self.stream, flush=True)

    # ---- drawing ---------------------------------------------------------------
    def _header(self) -> str:
        counts: dict[str, int] = {}
        for ln in self.lines.values():
            counts[ln.status] = counts.get(ln.status, 0) + 1
        left = sum(max(ln.total - ln.step, 0) for ln in self.lines.values()
                   if ln.status in ("queued", "running"))
        rate = sum(ln.rate() for ln in self.lines.values() if ln.status == "running")
        eta = 0.0 if left == 0 else left / rate if rate > 0 else float("nan")
        parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (f"sweep: {parts}{skipped} | {rate:.1f} steps/s | "
                f"elapsed {_fmt_eta(time.monotonic() - self.t0)} | ETA {_fmt_eta(eta)}")

    def _line(self, rid: str, ln: _RunLine) -> str:
        if ln.status == "running":
            rate = ln.rate()
            eta = (ln.total - ln.step) / rate if rate > 0 else float("nan")
            body = f"step {ln.step:>6}/{ln.total:<6} {rate:7.1f} steps/s  ETA {_fmt_eta(eta)}"
        else:
            body = ln.note
        w = self.label_width
        return f"  {ln.status:<8} {rid}  {ln.label[:w]:<{w}} {body}"

    def _log(self, text: str) -> None:
        if self.enabled and not self.tty:
            print(text, file=self.stream, flush=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled:
            return
        if not self.tty:
            if now - self._last_log > 15:
                self._last_log = now
                print(self._header(), file=self.stream, flush=True)
            return
        if not force and now - self._last_draw < 0.25:
            return
        self._last_draw = now
        shown = [(r, ln) for r, ln in self.lines.items() if ln.status == "running"]
        finished = [(r, ln) for r, ln in self.lines.items() if ln.status not in ("running", "queued")]
        shown += finished[-8:]                     # the most recent results stay visible
        text = [self._header()] + [self._line(r, ln) for r, ln in shown]
        out = ""
        if self._drawn:
            out += f"\x1b[{self._drawn}F"          # back to the top of the previous block
        out += "".join(f"\x1b[2K{t}\n" for t in text)
        out += "\x1b[J"                             # clear what the longer block left below
        self.stream.write(out)
        self.stream.flush()
        self._drawn = len(text)
