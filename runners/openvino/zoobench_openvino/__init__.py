"""zoobench backend: a deployment runtime serving converted ONNX models (zoobench_contract.converted)."""
