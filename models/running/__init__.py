"""Running the resident networks: SD-Turbo, the skip-connection VAE, LoRA adapter switching,
the model store (one lock, one model-call context, the task registry) and the img2img-turbo forward."""
