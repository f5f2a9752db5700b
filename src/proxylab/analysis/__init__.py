"""Pure analyses: stored runs (DataFrames) in, DataFrames or plain numbers out.

Plotting lives in :mod:`proxylab.report`; nothing here draws.
"""

from proxylab.analysis.lr import (capped_loss, lr_curves, lr_sensitivity, metric_vs_lr,
                                 optimal_lr)
from proxylab.analysis.runs import config_columns, final_metrics, varied_axes

__all__ = ["capped_loss", "config_columns", "final_metrics", "lr_curves", "lr_sensitivity",
           "metric_vs_lr", "optimal_lr", "varied_axes"]
