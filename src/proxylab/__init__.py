"""proxylab: a laboratory for the science of training dynamics."""

__version__ = "0.1.0"
