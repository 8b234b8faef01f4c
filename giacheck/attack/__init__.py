"""The gradient-inversion attack. It never imports ``data`` or ``metrics`` and never receives ground truth."""

from giacheck.attack.bnstats import NormTarget, infer_batch_stats, naive_stats
from giacheck.attack.invert import Reconstruction, invert
from giacheck.attack.labels import infer_labels
from giacheck.attack.objective import Replica
from giacheck.attack.proxy import select_proxy_stats

__all__ = ["NormTarget", "Reconstruction", "Replica", "infer_batch_stats", "infer_labels", "invert", "naive_stats",
           "select_proxy_stats"]
