"""Shared test code: the one CLI runner (:mod:`.cli`) and checkpoints made through the format registry (:mod:`.factory`)."""
