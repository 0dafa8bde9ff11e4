"""face-pipeline: face enrollment, 1:1 verification and 1:N search on Ray Serve."""

__version__ = "0.1.0"
