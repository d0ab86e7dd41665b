"""Training data: the procedural scene generator and loaders for the real dataset layouts."""
