"""Deployment: ONNX export, INT8 calibration and TensorRT engine builds."""
