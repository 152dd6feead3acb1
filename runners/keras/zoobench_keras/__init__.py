"""zoobench runner backend for Keras 3, on the TensorFlow, JAX or PyTorch back end (KERAS_BACKEND)."""
