"""Training one-step models: datasets from packages, our own classifier, and the recipes
(LDM autoencoder and latent diffusion, UFOGen one-step, pix2pix-Turbo, CycleGAN-Turbo).

Run as `python -m training RECIPE --help`. Nothing outside training/ and its tests imports it.
"""
