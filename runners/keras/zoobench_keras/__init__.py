"""zoobench runner backend for Keras 3 (TensorFlow backend).

Kept free of TensorFlow imports so that :mod:`zoobench_keras.torch_checkpoint` can be used
(and tested) with numpy alone.
"""
