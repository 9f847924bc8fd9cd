"""Pure PyTorch and NumPy: sequences in, embeddings and metrics out. Never imports Django."""
