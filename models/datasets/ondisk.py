"""On-disk loaders (full MNIST IDX, CIFAR-10 python batches, Google Speech Commands wav folders).
Filled in by the loaders' modules; this file only imports them so that they register."""
