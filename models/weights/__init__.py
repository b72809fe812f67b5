"""Getting weights: model specs, where weights come from, architecture configs, the tiny
random-weight stand-ins, released checkpoints and their download, and loading all of it."""
