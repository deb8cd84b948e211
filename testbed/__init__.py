"""splitbed: an edge-cloud emulation testbed for split computing.

`testbed` holds the experiment itself (config, model, codec, energy, metrics,
results, orchestration) and imports no Ray at module level, so a topology can
be parsed and validated before anything starts.
"""

__version__ = "0.1.0"
