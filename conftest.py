"""Root conftest: nothing heavy here; the giacheck plugin is loaded through its pytest11 entry point."""
