"""giacheck: executable, regression-checked tests of gradient-inversion leakage in federated learning."""

__version__ = "0.1.0"
