"""The DNN: architectures by name, the fx cut catalogue, the split model (head, butterfly, tail), the pre-run check."""
