"""Networks and weights: configs, builders, model sources and checkpoint loaders.

Nothing here loads weights or touches the network at import time.
"""
