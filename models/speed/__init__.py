"""Speed code that only the benchmark applies: attention kernels, memory format, torch.compile,
merged LoRA, and the TAESD preview decoder."""
