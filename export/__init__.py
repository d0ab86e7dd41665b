"""Export stage: TorchScript, ONNX and TensorRT artifacts of SPD and SPGM (imports spgim.train)."""
