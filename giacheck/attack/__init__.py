"""The gradient-inversion attack. It never imports ``data`` or ``metrics`` and never receives ground truth."""

from giacheck.attack.bnstats import NormTarget, infer_batch_stats, naive_stats
from giacheck.attack.distance import Distance
from giacheck.attack.invert import GradMatch, Reconstruction, Trial, invert, invert_trials
from giacheck.attack.labels import infer_labels
from giacheck.attack.objective import Replica
from giacheck.attack.proxy import select_proxy_stats
from giacheck.attack.registry import Attack, list_attacks, make_attack, register_attack

__all__ = ["Attack", "Distance", "GradMatch", "NormTarget", "Reconstruction", "Replica", "Trial",
           "infer_batch_stats", "infer_labels", "invert", "invert_trials", "list_attacks", "make_attack",
           "naive_stats", "register_attack", "select_proxy_stats"]
