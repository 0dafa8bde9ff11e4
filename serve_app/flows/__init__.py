"""The service's use cases, free of Ray and HTTP: each takes its ports and plain values."""
