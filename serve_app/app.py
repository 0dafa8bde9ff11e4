"""The deployment graph: Gateway -> (FaceEmbedder, FaceStore). `serve run serve_config.yaml`."""

from serve_app.deployments.embedder import FaceEmbedder
from serve_app.deployments.gateway import Gateway
from serve_app.deployments.store import FaceStore

app = Gateway.bind(FaceEmbedder.bind(), FaceStore.bind())
