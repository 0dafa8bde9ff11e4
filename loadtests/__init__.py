"""Load tests (Locust) and the side-by-side benchmark; see README "Load tests and benchmark"."""
