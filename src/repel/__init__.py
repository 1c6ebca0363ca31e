"""repel: distance-regularized continuation training, a kernel hill on the network's own checkpoints."""

__version__ = "0.1.0"
