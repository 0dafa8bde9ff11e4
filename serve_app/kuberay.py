"""The RayService's serveConfigV2, derived from the Serve profiles so the two cannot drift.

KubeRay deploys the Serve config embedded in the RayService manifest
(deploy/kuberay/rayservice.yaml). It is configs/production.yaml (Qdrant server, auth on,
several replicas) with the FaceEmbedder of configs/gpu.yaml (one replica per GPU, large
batches), since the manifest gives the embedder a GPU worker group.

    python -m serve_app.kuberay          # rewrite the manifest's serveConfigV2
    python -m serve_app.kuberay --check  # exit 1 if it differs (make test does this too)
    # The manifest with the verification flow off (the plan's partial rollback), to apply:
    python -m serve_app.kuberay --verification-flow off --stdout | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from serve_app.flow_switch import with_verification_flow

REPO_ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = REPO_ROOT / "configs" / "production.yaml"
GPU = REPO_ROOT / "configs" / "gpu.yaml"
MANIFEST = REPO_ROOT / "deploy" / "kuberay" / "rayservice.yaml"
GPU_DEPLOYMENT = "FaceEmbedder"

# The block scalar that holds the Serve config inside the manifest, up to the next key
# of `spec` (two spaces of indentation).
_BLOCK = re.compile(r"(?ms)^(  serveConfigV2: \|\n)(.*?)(?=^  \S)")


def _deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    (app,) = config["applications"]
    for deployment in app["deployments"]:
        if deployment["name"] == name:
            return dict(deployment)
    raise KeyError(f"no deployment {name!r} in the profile")


def serve_config(production: Path = PRODUCTION, gpu: Path = GPU) -> dict[str, Any]:
    """configs/production.yaml with the FaceEmbedder deployment of configs/gpu.yaml."""
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(production.read_text()))
    embedder = _deployment(yaml.safe_load(gpu.read_text()), GPU_DEPLOYMENT)
    (app,) = config["applications"]
    app["deployments"] = [embedder if d["name"] == GPU_DEPLOYMENT else d for d in app["deployments"]]
    return config


def render_block(config: dict[str, Any]) -> str:
    text = yaml.safe_dump(config, sort_keys=False, width=100)
    return "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())


def embedded_config(manifest_text: str) -> dict[str, Any]:
    manifest = yaml.safe_load(manifest_text)
    return dict(yaml.safe_load(manifest["spec"]["serveConfigV2"]))


def rewrite(manifest_text: str, config: dict[str, Any]) -> str:
    if not _BLOCK.search(manifest_text):
        raise ValueError("the manifest has no `  serveConfigV2: |` block under spec")
    return _BLOCK.sub(lambda m: m.group(1) + render_block(config), manifest_text, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when they differ")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--verification-flow", choices=["on", "off"],
                        help="set the Gateway's live switch (user_config) in serveConfigV2")
    parser.add_argument("--stdout", action="store_true", help="print the manifest instead of rewriting it")
    args = parser.parse_args(argv)
    text = args.manifest.read_text()
    expected = serve_config()
    if args.verification_flow:
        expected = with_verification_flow(expected, args.verification_flow == "on")
    if args.check:
        if embedded_config(text) != expected:
            print(f"{args.manifest}: serveConfigV2 differs from configs/production.yaml + gpu.yaml's "
                  "FaceEmbedder; run `python -m serve_app.kuberay`", file=sys.stderr)
            return 1
        return 0
    if args.stdout:
        sys.stdout.write(rewrite(text, expected))
    else:
        args.manifest.write_text(rewrite(text, expected))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
