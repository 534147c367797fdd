"""Autoencoder outlier detection (issue 17): model, store, executor, trainers.

Keras runs on the JAX backend here: set before anything imports Keras.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
