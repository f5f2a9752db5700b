"""The `proxylab` command. Exit codes: 0 ok, 1 runtime failure, 2 bad input (nothing written)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from pathlib import Path

from proxylab.config import ConfigError, SECTIONS, load_config
from proxylab.sweep.executors import WorkerStartError

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2


def _db_path(args) -> Path:
    from proxylab.store import default_db_path  # noqa: PLC0415

    return Path(args.db) if args.db else default_db_path()


def _open_store(args, *, must_exist: bool):
    from proxylab.store import Store  # noqa: PLC0415

    path = _db_path(args)
    if must_exist and not path.exists():
        raise ConfigError(f"{path}: no proxylab store here (use --db PATH or set PROXYLAB_DB)")
    return Store(path)


def _fmt(v) -> str:
    """The CLI's one number style: 4 significant digits, whole numbers from 10^4 up (tokens/s),
    "-" for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if math.isfinite(v) and abs(v) >= 1e4 else f"{v:.4g}"
    return '""' if v == "" else str(v)


# ----------------------------------------------------------------------------------
# verbs


def cmd_run(args) -> int:
    from proxylab.sweep.driver import preflight, run_one  # noqa: PLC0415

    cfg = load_config(args.config, args.set)
    fingerprints = preflight([cfg])                # missing or corrupt data -> exit 2, no writes
    store = _open_store(args, must_exist=False)
    result, status, trained = run_one(cfg, store, force=args.force, fingerprints=fingerprints)
    print(f"run {cfg.id}  status {status}" + ("" if trained else "  (already in the store; --force redoes it)"))
    if result is None:
        err = store.run(cfg.id).get("error") or ""
        print(err.strip().splitlines()[-1] if err else "the run failed", file=sys.stderr)
        return EXIT_RUNTIME
    s = result.summary
    print(f"final train loss {_fmt(s.get('final_train_loss'))}  val loss {_fmt(s.get('final_val_loss'))}"
          + (f"  val acc {_fmt(s['final_val_acc'])}" if s.get("final_val_acc") is not None else "")
          + f"  tokens/s {_fmt(float(round(s['tokens_per_s'])) if s.get('tokens_per_s') else None)}"
          + f"  steps {s.get('steps_done')}")
    if status == "diverged":
        print(f"diverged at step {s.get('diverged_step')}")
    return EXIT_OK


def cmd_sweep(args) -> int:
    from proxylab.sweep.driver import plan, preflight, run_sweep  # noqa: PLC0415
    from proxylab.sweep.executors import make_executor  # noqa: PLC0415
    from proxylab.sweep.spec import load_sweep  # noqa: PLC0415

    spec = load_sweep(args.sweep_file).with_overrides(args.set)
    # built before the dry run too (cheap: nothing starts yet), so that a backend that cannot
    # run here (ray not installed, bad --cpus-per-run) fails the same way in both
    executor = make_executor(args.workers, threads=args.threads or (0 if args.workers == 1 else 1),
                             backend=args.backend, **_ray_options(args))
    if args.dry_run:
        db = _db_path(args)
        store = _open_store(args, must_exist=True) if db.exists() else None
        configs, status = plan(spec, store)
        from proxylab.sweep.driver import run_label  # noqa: PLC0415

        for c in configs:
            print(f"{c.id}  {status[c.id]:<9} {run_label(c, spec.axes)}")
        n_done = sum(s in ("done", "diverged") for s in status.values())
        print(f"{len(configs)} runs in sweep {spec.name!r}: {n_done} already finished, "
              f"{len(configs) - n_done} to run")
        return EXIT_OK
    fingerprints = preflight(spec.expand(),
                             ray_gpus=args.gpus_per_run if args.backend == "ray" else None)
    store = _open_store(args, must_exist=False)    # only now: bad input above wrote nothing
    try:
        out = run_sweep(spec, store, executor, show_progress=not args.quiet,
                        fingerprints=fingerprints)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are stored; run the same command to resume",
              file=sys.stderr)
        return 130
    counts = out.counts()
    ran = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to run"
    print(f"sweep {spec.name!r}: {out.total} runs, {out.skipped} already finished, {ran}  "
          f"(store: {store.path})")
    return EXIT_RUNTIME if counts.get("failed") else EXIT_OK


def _iso(t) -> str | None:
    """A time as ISO 8601 UTC to the second (unix seconds or a pandas Timestamp in)."""
    from datetime import datetime, timezone  # noqa: PLC0415

    if t is None or (isinstance(t, float) and math.isnan(t)):
        return None
    if hasattr(t, "to_pydatetime"):
        return None if t != t else t.floor("s").isoformat()
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _json_value(v):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python numbers."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _ls_records(df) -> list[dict]:
    """Flat records: dotted config keys, summary keys, ISO times (the --json convention)."""
    out = []
    for rec in df.to_dict(orient="records"):
        for k in ("created", "started", "finished"):
            if k in rec:
                rec[k] = _iso(rec[k])
        out.append({k: _json_value(v) for k, v in rec.items()})
    return out


def cmd_ls(args) -> int:
    store = _open_store(args, must_exist=True)
    if args.sweep and args.sweep not in set(store.sweeps()["name"]):
        raise ConfigError(f"--sweep {args.sweep!r}: no such sweep in {store.path}")
    df = store.runs(sweep=args.sweep)
    if args.json:
        print(json.dumps(_ls_records(df)))
        return EXIT_OK
    if df.empty:
        print("no runs")
        return EXIT_OK
    cols = [c for c in ("run_id", "sweep", "status", "final_val_loss", "tokens_per_s") if c in df]
    axes = [c for c in df.columns if "." in c and df[c].astype(str).nunique() > 1]
    table = df[cols[:3] + axes + cols[3:]].copy()
    for c in table.columns:        # the CLI's number style: 4 significant digits, "-" for none
        if c == "tokens_per_s":
            table[c] = [_fmt(None if v is None or v != v else float(round(v))) for v in table[c]]
        else:
            table[c] = [_fmt(v.item() if hasattr(v, "item") else v) for v in table[c]]
    print(table.to_string(index=False))
    return EXIT_OK


def _show_records(info: dict) -> dict:
    """One run as flat dotted keys: the same keys as its `ls --json` record, plus meta.* and
    the error text."""
    from proxylab.store.schema import cell, flat_config  # noqa: PLC0415

    def flat(prefix: str, d: dict):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(f"{prefix}{k}.", v)
            else:
                yield f"{prefix}{k}", v

    rec = {"run_id": info["run_id"], "sweep": ",".join(info.get("sweeps") or []) or None,
           "status": info["status"], "attempt": info["attempt"],
           **{k: _iso(info.get(k)) for k in ("created", "started", "finished")},
           "error": info.get("error")}
    rec.update(flat_config(info["config"]))
    for k, v in (info.get("summary") or {}).items():   # as in `ls`: a clash gets summary.
        rec[f"summary.{k}" if k in rec else k] = cell(v)
    rec.update(flat("meta.", info.get("meta") or {}))
    return {k: _json_value(v) for k, v in rec.items()}


def cmd_show(args) -> int:
    store = _open_store(args, must_exist=True)
    rec = _show_records(store.run(store.resolve_id(args.run_id)))  # a unique prefix is enough
    if args.json:
        print(json.dumps(rec, indent=2, default=str))
        return EXIT_OK
    width = max(map(len, rec))
    for k, v in rec.items():
        if k == "error" and v:
            print(f"{k:<{width}}  " + "\n".join(" " * (width + 2) + ln if i else ln
                                               for i, ln in enumerate(str(v).rstrip().splitlines())))
        elif not isinstance(v, (str, type(None))) and not isinstance(v, (int, float)):
            print(f"{k:<{width}}  {json.dumps(v, default=str)}")
        else:
            print(f"{k:<{width}}  {_fmt(v) if v is not None else '-'}")
    return EXIT_OK


def cmd_report(args) -> int:
    from proxylab.report import make_report  # noqa: PLC0415

    store = _open_store(args, must_exist=True)
    make_report(store, args.sweep_name, args.out)
    print(f"report: {Path(args.out).resolve() / 'index.html'}")
    return EXIT_OK


def cmd_export(args) -> int:
    from proxylab.store.export import export  # noqa: PLC0415

    store = _open_store(args, must_exist=True)
    paths = export(store, args.out, args.format, sweep=args.sweep)
    n_runs = len(store.runs(sweep=args.sweep))
    what = f"sweep {args.sweep!r}" if args.sweep else f"all of {store.path}"
    if "metrics" in paths:
        print(f"exported {n_runs} runs ({what}) as {args.format}:\n"
              f"  runs (one row per run: status, config keys, final numbers): {paths['runs']}\n"
              f"  metrics (long form: run_id, step, key, value): {paths['metrics']}")
    else:
        print(f"exported {n_runs} runs ({what}) to {args.format}: {paths['runs']}")
    return EXIT_OK


def cmd_study(args) -> int:
    from proxylab.studies import run_study  # noqa: PLC0415

    db = args.db or os.environ.get("PROXYLAB_DB") or None   # default: OUT/proxylab.db
    summary_path, counts = run_study(args.name, quick=args.quick, smoke=args.smoke,
                                     out=args.out, db=db,
                                     workers=args.workers, backend=args.backend,
                                     **_ray_options(args))
    print(f"study report: {Path(summary_path).parent.resolve() / 'index.html'}")
    if counts.get("failed"):
        print(f"{counts['failed']} runs failed; see `proxylab ls --db ...`", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def cmd_keys(args) -> int:
    from dataclasses import fields  # noqa: PLC0415

    from proxylab.optim import describe_optimizers  # noqa: PLC0415

    rows = []
    for sec, cls in SECTIONS.items():
        for f in fields(cls):
            allowed = f.metadata.get("choices")
            doc = f.metadata.get("doc", "") + (f"; one of {', '.join(allowed)}" if allowed else "")
            rows.append((f"{sec}.{f.name}", repr(getattr(cls(), f.name)), doc))
    kw, dw = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'key':<{kw}}  {'default':<{dw}}  meaning")
    for key, default, doc in rows:
        print(f"{key:<{kw}}  {default:<{dw}}  {doc}")
    print("\noptim.name values (default optim.lr for the GPT proxy) and their optim.extra.NAME "
          "settings (defaults):")
    opts = describe_optimizers()
    nw = max(len(n) for n in opts)
    for name, d in opts.items():
        extra = ", ".join(f"{k}={v!r}" for k, v in d["extra"].items()) or "none"
        print(f"  {name:<{nw}}  lr {_fmt(d['lr']):<6} {d['doc']}")
        print(f"  {'':<{nw}}  extra: {extra}")
    return EXIT_OK


# ----------------------------------------------------------------------------------
# argument parsing


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (e.g. 0.25), got {text!r}")
    return x


EXPORT_FORMATS = ("parquet", "csv", "tensorboard", "mlflow")


def _study_names() -> list[str]:
    from proxylab.studies import STUDIES  # noqa: PLC0415 (a dict of module names: cheap)

    return sorted(STUDIES)


class _WholeWordHelp(argparse.HelpFormatter):
    """Help text wrapped at spaces only, so study names like lr-width stay whole."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _with_backend(sp) -> None:
    sp.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="local: processes on this machine (--workers); ray: one Ray task per run")
    sp.add_argument("--address", default=None, metavar="HOST:PORT",
                    help="ray: the cluster to use (default $RAY_ADDRESS, else a local Ray)")
    sp.add_argument("--cpus-per-run", type=_fraction, default=1.0, metavar="N",
                    help="ray: CPUs each run holds (its torch threads; default 1)")
    sp.add_argument("--gpus-per-run", type=_fraction, default=0.0, metavar="F",
                    help="ray: GPUs each run holds; a fraction packs runs on a GPU (0.25 = 4)")


def _ray_options(args) -> dict:
    return {"address": args.address, "cpus_per_run": args.cpus_per_run,
            "gpus_per_run": args.gpus_per_run} if args.backend == "ray" else {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxylab", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    def with_db(sp, default="./proxylab.db"):
        sp.add_argument("--db", metavar="PATH",
                        help=f"store file (default: $PROXYLAB_DB if set, else {default})")
        return sp

    sp = with_db(sub.add_parser("run", help="train one run"))
    sp.add_argument("config", nargs="?", help="TOML config file")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config key, repeatable (`proxylab keys` lists them)")
    sp.add_argument("--force", action="store_true", help="redo a run that is already finished")
    sp.set_defaults(func=cmd_run)

    sp = with_db(sub.add_parser("sweep", help="run a sweep file (resumable)"))
    sp.add_argument("sweep_file", metavar="SWEEP.toml")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config key, repeatable (`proxylab keys` lists them)")
    sp.add_argument("--workers", type=_positive, default=1, metavar="N",
                    help="parallel runs, one process each (default 1: one run after another, "
                         "in this process)")
    sp.add_argument("--threads", type=_positive, default=0,
                    help="torch threads per run (default: all cores inline, 1 per worker)")
    _with_backend(sp)
    sp.add_argument("--dry-run", action="store_true", help="list runs and their status only")
    sp.add_argument("--quiet", action="store_true", help="no live progress display")
    sp.set_defaults(func=cmd_sweep)

    sp = with_db(sub.add_parser("ls", help="list runs"))
    sp.add_argument("--sweep")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_ls)

    sp = with_db(sub.add_parser("show", help="one run's config, meta and summary"))
    sp.add_argument("run_id")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_show)

    sp = with_db(sub.add_parser("report", help="figures + index.html + summary.json"))
    sp.add_argument("sweep_name")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_report)

    sp = with_db(sub.add_parser("export", help="export runs and metrics"))
    sp.add_argument("--format", required=True, metavar="FORMAT",
                    help=f"one of {', '.join(EXPORT_FORMATS)}")
    sp.add_argument("--out", required=True, metavar="PATH",
                    help="parquet/csv: the runs file (metrics go beside it as "
                         "<stem>.metrics.<format>); tensorboard: a folder; mlflow: a folder or "
                         "tracking URI")
    sp.add_argument("--sweep")
    sp.set_defaults(func=cmd_export)

    sp = with_db(sub.add_parser("study", help="a built-in study end to end",
                                formatter_class=_WholeWordHelp),
                 default="OUT/proxylab.db")
    sp.add_argument("name", metavar="NAME", help=f"one of: {', '.join(_study_names())}")
    size = sp.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="a first look: <= 10 min on 2 cores (default: the full form)")
    size.add_argument("--smoke", action="store_true",
                      help="the tests' form: <= 1 min, checks the plumbing, not the claims")
    sp.add_argument("--out", default=None, metavar="OUT",
                    help="report folder (default: reports/NAME, reports/NAME-quick, "
                         "reports/NAME-smoke)")
    sp.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1), metavar="N",
                    help="parallel runs, one process each (default 2, or 1 on a 1-core "
                         "machine: a study is long, so it uses both cores)")
    _with_backend(sp)
    sp.set_defaults(func=cmd_study)

    sp = sub.add_parser("keys", help="list config keys, defaults and allowed values")
    sp.set_defaults(func=cmd_keys)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"proxylab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WorkerStartError as e:       # the environment, not the input: its output is above
        print(f"proxylab: error: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    except BrokenPipeError:  # `proxylab ls | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
