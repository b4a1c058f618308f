"""edgefashion: clothing classification from training to a camera on the edge.

Importing the package imports nothing heavy: the runtime half (onnxruntime, OpenCV) and the training half
(torch) load only when a command needs them.
"""
__version__ = "0.1.0"
