"""Kill share per module from mutmut's results (``make mutate`` prints it; docs/testing.md).

    python tests/mutation_report.py [PATTERN ...] [--survivors | --pending]

``--pending`` prints only the names of the mutants not yet killed (survived, no tests, not
checked), one per line: ``mutmut run $(python tests/mutation_report.py --pending PATTERN)``
reruns just those after new tests (a glob makes mutmut rerun every match, killed or not).
``--sample=N`` prints N mutant names drawn at random (seed 0) from those matching, for an
estimate of a module's kill share when the whole module would take too long.

PATTERNs are the mutant-name globs the run was scoped to (default: every mutant mutmut
made). Reads ``mutants/**/*.py.meta`` (mutmut 3's per-file results). A mutant counts as
killed when a test failed or it timed out (an infinite loop is caught); "no tests" counts
as survived (nothing would notice it); mutants not yet checked are reported, not counted.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout",
          152: "timeout", 255: "timeout", 37: "type check", -11: "segfault", -9: "segfault"}
SURVIVED = {0: "survived", 5: "no tests", 33: "no tests"}


def load(root: Path = Path("mutants")) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def module_of(name: str) -> str:
    """'proxylab.analysis.lr.x_lr_sensitivity__mutmut_3' -> 'proxylab.analysis.lr'
    (class methods are mangled as 'mod.xǁClassǁmethod__mutmut_N')."""
    head = name.split("__mutmut_")[0]
    return head.split(".xǁ")[0] if ".xǁ" in head else head.rsplit(".", 1)[0]


def summarize(codes: dict[str, int | None], patterns: list[str]) -> dict[str, Counter]:
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, code in codes.items():
        if patterns and not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        c = by_module[module_of(name)]
        if code is None:
            c["not checked"] += 1
        elif code in KILLED:
            c["killed"] += 1
        elif code in SURVIVED:
            c[SURVIVED[code]] += 1
        else:
            c["other"] += 1
    return dict(by_module)


def kill_share(c: Counter) -> float:
    checked = c["killed"] + c["survived"] + c["no tests"] + c["other"]
    return c["killed"] / checked if checked else float("nan")


def main(argv: list[str]) -> int:
    show = "--survivors" in argv
    patterns = [a for a in argv if not a.startswith("--")]
    codes = load()
    if not codes:
        print("no mutmut results under ./mutants: run `make mutate` first", file=sys.stderr)
        return 1
    sample = [int(a.split("=", 1)[1]) for a in argv if a.startswith("--sample=")]
    if sample:
        import random  # noqa: PLC0415

        names = sorted(n for n in codes if not patterns or any(fnmatch.fnmatch(n, p) for p in patterns))
        print("\n".join(sorted(random.Random(0).sample(names, min(sample[0], len(names))))))
        return 0
    if "--pending" in argv:
        for name, code in sorted(codes.items()):
            if code not in KILLED and (not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)):
                print(name)
        return 0
    table = summarize(codes, patterns)
    total = Counter()
    print(f"{'module':34s} {'killed':>7s} {'survived':>8s} {'no tests':>8s} {'unchecked':>9s} {'kill share':>10s}")
    for mod in sorted(table):
        c = table[mod]
        total.update(c)
        print(f"{mod:34s} {c['killed']:7d} {c['survived']:8d} {c['no tests']:8d} "
              f"{c['not checked']:9d} {kill_share(c):10.1%}")
    print(f"{'all':34s} {total['killed']:7d} {total['survived']:8d} {total['no tests']:8d} "
          f"{total['not checked']:9d} {kill_share(total):10.1%}")
    if show:
        for name, code in sorted(codes.items()):
            if code in SURVIVED and (not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)):
                print(f"{SURVIVED[code]:9s} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
