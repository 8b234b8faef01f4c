"""Data files shipped with giacheck (box annotations for bundled images)."""
