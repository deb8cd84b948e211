"""Pure models of the emulated world: radio (RRC, energy), hardware profiles, split policies, batching, balancing,
what a replica accepts, device populations and input frames. No Ray, no output folder.
"""
