"""The training loop, schedules and probes."""

from proxylab.train.loop import NullReporter, Reporter, RunResult, train

__all__ = ["NullReporter", "Reporter", "RunResult", "train"]
