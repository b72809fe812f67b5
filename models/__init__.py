"""Networks and weights, in three parts:

- models.running: the resident networks and how they are called (SD-Turbo, the skip-connection
  VAE, LoRA adapter switching, the store with its model-call context and task registry, the
  img2img-turbo forward);
- models.weights: where weights come from and how they are loaded (specs, sources, configs, the
  tiny random-weight stand-ins, released checkpoints, downloads, task loading);
- models.speed: speed settings and the TAESD preview decoder, which only the benchmark applies.

Nothing here loads weights or touches the network at import time.
"""
