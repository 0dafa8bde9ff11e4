"""The HTTP edge: the FastAPI app factory, its middleware and error handling."""
