"""Deployment: everything after ``ecqx_tf.strip()``: TFLite Micro and FantastIC4 exporters,
simulators and host checks."""
