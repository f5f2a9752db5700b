"""The training loop (`proxylab.train.loop.train`), schedules and probes."""
