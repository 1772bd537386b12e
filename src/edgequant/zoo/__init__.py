"""The built-in demo task: Fashion-MNIST and a small edge-style CNN."""
