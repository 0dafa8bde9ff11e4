"""The face models: one class per model, each behind explicit onnxruntime providers."""
