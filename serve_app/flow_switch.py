"""The plan's partial rollback, live: turn the verification-first flow off (enroll and
verify answer 503 `verification_flow_disabled`; search and ingest keep serving) or on
again, on a running cluster, without restarting any replica.

    python -m serve_app.flow_switch off [--config FILE] [--address URL]
    python -m serve_app.flow_switch on

It deploys the Serve config with `enable_verification_flow` in the Gateway's
`user_config` (`serve deploy`); Serve hands the change to the running Gateway replicas
(`reconfigure`) and leaves the other deployments alone. Give the config the cluster runs
(default: $SERVE_CONFIG, as in the container image, else configs/production.yaml).
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
GATEWAY = "Gateway"


def with_verification_flow(config: dict[str, Any], enabled: bool) -> dict[str, Any]:
    """The Serve config with the Gateway's user_config switch set (a copy)."""
    changed = copy.deepcopy(config)
    gateways = [d for app in changed["applications"] for d in app.get("deployments", []) if d["name"] == GATEWAY]
    if not gateways:
        raise ValueError(f"the config declares no {GATEWAY} deployment")
    for gateway in gateways:
        gateway["user_config"] = {**(gateway.get("user_config") or {}), "enable_verification_flow": enabled}
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state", choices=["on", "off"])
    # In the container image, SERVE_CONFIG names the config it runs (Dockerfile).
    default = os.environ.get("SERVE_CONFIG") or REPO_ROOT / "configs" / "production.yaml"
    parser.add_argument("--config", type=Path, default=default, help="the Serve config the cluster runs")
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="the Ray dashboard of the head node")
    args = parser.parse_args(argv)
    config = with_verification_flow(yaml.safe_load(args.config.read_text()), args.state == "on")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="flow-switch-") as out:
        yaml.safe_dump(config, out, sort_keys=False)
        out.flush()
        serve = Path(sys.executable).parent / "serve"
        return subprocess.run([str(serve), "deploy", "--address", args.address, out.name]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
