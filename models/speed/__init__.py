"""Speed settings Studio.load applies once (attention kernel, memory format, torch.compile with CUDA
graphs on CUDA), merged LoRA for the benchmark, and the TAESD preview decoder."""
