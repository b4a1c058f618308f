"""The torch-free runtime: onnxruntime, OpenCV and numpy only. Nothing here may import torch."""
