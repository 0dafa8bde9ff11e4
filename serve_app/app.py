"""The deployment graph: Gateway -> (FaceEmbedder, FaceStore). `serve run serve_config.yaml`."""

from serve_app.deployments.embedder import FaceEmbedder
from serve_app.deployments.gateway import Gateway
from serve_app.deployments.store import FaceStore

# mypy does not apply class decorators (python/mypy#3135): it sees the plain classes,
# not the Deployments `@serve.deployment` makes of them.
app = Gateway.bind(FaceEmbedder.bind(), FaceStore.bind())  # type: ignore[attr-defined]
