"""Model zoo (architectures by name) and data set recipes."""
