"""zoobench runner backend for Apache MXNet 1.9 (Gluon model zoo + EfficientNet-Lite0)."""
