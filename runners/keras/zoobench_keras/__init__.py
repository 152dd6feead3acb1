"""zoobench runner backend for Keras 3 (TensorFlow backend)."""
