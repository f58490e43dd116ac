"""Side-by-side benchmarks of ddm-jax against Keras and PyTorch (see README.md here)."""
