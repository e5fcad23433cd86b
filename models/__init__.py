"""PyTorch definitions of every encoder and the fusion head, with weight loading."""
