"""Test-only pytest plugin: the smoke profile cut to 30 attack iterations, so a suite claim runs in seconds."""

import dataclasses

from giacheck import specs

specs.PROFILES["smoke"] = dataclasses.replace(specs.PROFILES["smoke"],
                                              attack=dataclasses.replace(specs.PROFILES["smoke"].attack, iterations=30))
