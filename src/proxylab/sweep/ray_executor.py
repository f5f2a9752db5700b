"""The Ray backend: one Ray task per run, on one machine or a cluster (``pip install 'proxylab[ray]'``).

Plain Ray core tasks, not Ray Tune: the sweep is already expanded and resumable, so Ray only
places runs on CPUs/GPUs. The driver stays the only store writer, exactly as with the local
pool:

- Each run is a task with ``num_cpus = cpus_per_run`` and ``num_gpus = gpus_per_run``
  (fractional: 0.25 packs four small runs on a GPU; Ray sets ``CUDA_VISIBLE_DEVICES``). The
  task sets torch's threads to the CPUs it holds (at least 1); the run config is not changed,
  so run ids are those of the local pool.
- Workers stream their events (``started``, metric rows, progress) to an event-sink actor
  that the driver created, in batches (every 0.5 s, at most 256 events); the driver drains it
  a few times a second and writes the rows. A task's last batch is in the sink before the task
  returns its terminal event (``finished`` / ``failed``), so nothing is lost at the end.
- A worker process that dies (OOM kill, segfault) is retried by Ray (``max_retries``); each
  attempt tags its events with its own token and the driver drops events of an attempt that
  is no longer the current one, so a dead attempt's rows never mix with the retry's (the
  retry's ``started`` also drops the earlier attempt's rows in the store). When it keeps dying
  the run is recorded ``failed`` and the sweep goes on.
- kill -9 of the driver: Ray ends the job, which kills its tasks and the sink; runs left
  ``running`` are redone on the next start, as with the local pool.
- Ctrl-C: every task is cancelled (``force=True`` kills their processes), the sink is
  killed, and KeyboardInterrupt propagates.

What is shipped to the workers: the pickled ``RunConfig`` and the target function (by
reference: proxylab must be installed, the same version, on every node); data is read from
``task.path`` on the node that runs the task. Checkpoints (``train.checkpoint_every``) are
written under the driver's checkpoint folder path on the node that trains: resuming a run on
another node needs that folder on a shared disk.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
import uuid
from typing import Callable

from proxylab.config import ConfigError, RunConfig

FLUSH_S = 0.5          # a worker sends its buffered events at least this often...
FLUSH_EVENTS = 256     # ...or when this many are waiting
POLL_S = 0.2           # how often the driver drains the sink while it waits


def import_ray():
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise ConfigError("--backend ray: needs the optional package 'ray'; install it with: "
                          "pip install 'proxylab[ray]'") from None
    return ray


def check_gpus(configs: list[RunConfig], gpus_per_run: float) -> None:
    """Runs that ask for CUDA need a GPU share: Ray hides the GPUs from tasks holding none."""
    if gpus_per_run == 0 and any(c.train.device == "cuda" for c in configs):
        raise ConfigError("train.device: 'cuda' with --backend ray needs --gpus-per-run > 0 "
                          "(e.g. 1, or 0.25 to pack four runs on a GPU)")


class _Sink:
    """The event-sink actor: workers append batches, the driver takes them all."""

    def __init__(self):
        self.events: list = []

    def put(self, batch: list) -> None:
        self.events.extend(batch)

    def drain(self) -> list:
        out, self.events = self.events, []
        return out


def run_task(cfg: RunConfig, sink, cpus: float, target: Callable | None = None,
             checkpoint_dir: str | None = None):
    """The body of one Ray task: train ``cfg`` and return its terminal event.

    ``target(cfg, emit)`` runs the config and emits its events (default
    :func:`proxylab.sweep.executors.execute_one`). ``checkpoint_dir`` is the driver's
    checkpoint folder (``train.checkpoint_every``), the same path on this node.
    """
    import ray  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from proxylab.sweep.executors import execute_one  # noqa: PLC0415
    from proxylab.train.checkpoint import ENV  # noqa: PLC0415

    if checkpoint_dir:              # a Ray worker serves many tasks: set (or clear) it per task
        os.environ[ENV] = checkpoint_dir
    else:
        os.environ.pop(ENV, None)

    torch.set_num_threads(max(1, int(cpus)))      # train.threads = the CPUs this task holds
    token, buf, terminal = uuid.uuid4().hex, [], []
    last = [time.monotonic()]

    def flush(wait: bool = False) -> None:
        if buf:
            ref = sink.put.remote(list(buf))
            buf.clear()
            if wait:
                ray.get(ref)
        last[0] = time.monotonic()

    def emit(event) -> None:
        if event[0] in ("finished", "failed"):
            terminal.append(event)
            return
        buf.append((token, event))
        if event[0] == "started" or len(buf) >= FLUSH_EVENTS or time.monotonic() - last[0] > FLUSH_S:
            flush()

    try:
        (target or execute_one)(cfg, emit)
    except Exception:  # noqa: BLE001 -- a target that raises fails its run, not the sweep
        terminal.append(("failed", cfg.id, traceback.format_exc(limit=20)))
    flush(wait=True)                               # in the sink before the task returns
    return terminal[-1] if terminal else ("failed", cfg.id, "worker ended without a result")


class RayExecutor:
    """Run configs as Ray tasks on the cluster at ``address`` (else ``RAY_ADDRESS``, else a
    Ray instance started here). See the module doc for the guarantees."""

    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float = 0.0, max_retries: int = 2,
                 target: Callable | None = None):
        if not cpus_per_run > 0:
            raise ConfigError(f"--cpus-per-run {cpus_per_run}: must be > 0")
        if not gpus_per_run >= 0:
            raise ConfigError(f"--gpus-per-run {gpus_per_run}: must be >= 0 (a fraction such "
                              "as 0.25 packs four runs on a GPU)")
        if gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
            raise ConfigError(f"--gpus-per-run {gpus_per_run}: above 1 it must be a whole number")
        self.ray = import_ray()
        self.address = address
        self.cpus, self.gpus = float(cpus_per_run), float(gpus_per_run)
        self.max_retries, self.target = max_retries, target
        self._own = False          # True once we started a Ray instance ourselves

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                      configure_logging=True)
        address = self.address or os.environ.get("RAY_ADDRESS")
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:                                  # a Ray instance of our own, on this machine
                ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
                self._own = True
        except ConnectionError as e:
            raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({e})") from None

    def connect(self, tries: int = 1, wait_s: float = 3.0) -> None:
        """Join the cluster now (``run`` does it on first use); ``tries`` > 1 retries a
        cluster that is still coming up (a freshly started one under load)."""
        for i in range(tries):
            try:
                return self._connect()
            except ConfigError:
                if i == tries - 1:
                    raise
                self.ray.shutdown()
                time.sleep(wait_s)

    def run(self, configs: list[RunConfig], handle) -> None:
        if not configs:
            return
        check_gpus(configs, self.gpus)
        self._connect()
        ray = self.ray
        self._check_fits()
        task = ray.remote(run_task).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                            max_retries=self.max_retries, retry_exceptions=False)
        sink = ray.remote(_Sink).options(num_cpus=0).remote()
        from proxylab.train.checkpoint import ENV  # noqa: PLC0415

        ckpt = os.environ.get(ENV)                 # set by the driver (next to the store)
        refs = {task.remote(cfg, sink, self.cpus, self.target, ckpt): cfg.id for cfg in configs}
        current: dict[str, str] = {}               # run id -> token of its current attempt
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S,
                                    fetch_local=False)
                self._drain(sink, current, handle)
                for ref in ready:
                    rid = refs.pop(ref)
                    try:
                        event = ray.get(ref)
                    except ray.exceptions.RayError as e:   # the worker kept dying, or was lost
                        event = ("failed", rid, f"Ray task failed after {self.max_retries} "
                                                f"retries: {type(e).__name__}: {str(e)[-2000:]}")
                    handle(event)
        except BaseException:
            # Ctrl-C or a store error: no task may go on running; their runs stay 'running'
            # in the store and are redone on the next start (as after kill -9).
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(sink)

    def _check_fits(self) -> None:
        """Warn when no node can hold one run: its tasks would wait for a node that has
        (an autoscaling cluster may add one; a fixed one never will)."""
        import sys  # noqa: PLC0415

        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if nodes and not any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus
                             for r in nodes):
            if self._own:                          # our own instance never grows
                raise ConfigError(
                    f"--cpus-per-run {self.cpus:g} / --gpus-per-run {self.gpus:g}: this machine "
                    f"has {nodes[0].get('CPU', 0):g} CPUs and {nodes[0].get('GPU', 0):g} GPUs; "
                    "ask for less, or give --address of a cluster that has them")
            print(f"proxylab: warning: no node of the Ray cluster has {self.cpus:g} CPUs"
                  + (f" and {self.gpus:g} GPUs" if self.gpus else "")
                  + " free for one run; the runs wait until such a node joins",
                  file=sys.stderr)

    def _drain(self, sink, current: dict[str, str], handle) -> None:
        for token, event in self.ray.get(sink.drain.remote()):
            kind, rid = event[0], event[1]
            if kind == "started":
                current[rid] = token
            elif current.get(rid) != token:
                continue                           # a dead attempt's late event
            handle(event)


def _free_ports(n: int) -> list[int]:
    import socket  # noqa: PLC0415

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def local_cluster(num_cpus: int = 2, temp_dir: str | None = None, log_path: str | None = None,
                  extra_env: dict | None = None, timeout: float = 120.0):
    """A real Ray cluster on 127.0.0.1 for tests and benchmarks: ``ray start --head --block``
    with free ports, its own temp dir and ``num_cpus`` CPUs, in a process group of its own;
    yields its address and stops it on exit (ending that process group, nothing else).
    Raises RuntimeError when it does not come up."""
    import shutil  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    tmp = temp_dir or tempfile.mkdtemp(prefix="pxr", dir="/tmp")   # Ray's socket paths are short
    gcs, node, obj, agent, metrics, env_agent, agent_grpc, client = _free_ports(8)
    lo = 20000 + (os.getpid() % 200) * 200
    # a private 127.0.0.1 cluster: no token auth (``ray start`` turns it on by default in
    # recent Ray whenever ~/.ray/auth_token exists, and a driver without the token is refused)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "disabled", **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    log = open(log_path or os.path.join(tmp, "ray-start.log"), "w")
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={tmp}",
         "--include-dashboard=false", "--disable-usage-stats",
         f"--node-manager-port={node}", f"--object-manager-port={obj}",
         f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
         f"--runtime-env-agent-port={env_agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--ray-client-server-port={client}", f"--min-worker-port={lo}",
         f"--max-worker-port={lo + 199}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start failed (exit {proc.returncode}); see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"ray start did not come up in {timeout:.0f} s; "
                                       f"see {log.name}") from None
                time.sleep(0.5)
        yield f"127.0.0.1:{gcs}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)     # ray start --block stops what it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is still there
        proc.wait()
        log.close()
        if temp_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
