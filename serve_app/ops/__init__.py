"""`face-ops`: the operator's toolbox (the deployment plan's runbook scripts as one CLI).

Live operations go to the running service over HTTP (admin routes, `X-API-Key`); with no
service answering, the commands that can open the store themselves do so, and say so.
"""
