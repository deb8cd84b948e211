"""The driver: Ray start-up, the run (phases, drains, faults), progress, link checks, ladders."""
