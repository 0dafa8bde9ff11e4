"""The Serve deployments: thin wrappers that give the plain modules a place in the graph."""
