"""run.py train: datasets, the butterfly training loop, and the accuracy-against-bytes trade-off."""
