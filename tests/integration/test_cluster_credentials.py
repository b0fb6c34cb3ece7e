"""A kubeconfig credential that expires (an exec plugin's token) through the real client.

The kubernetes client runs the loader's credential hook before every request; Cluster lets it
run at most every `credential_check_every_s` seconds (see bot.cluster.transport). These tests
count the plugin's runs and rotate the token the fake API server accepts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from bot.cluster.client import Cluster, RetryPolicy

PLUGIN = """\
import datetime, json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with (here / "runs").open("a") as runs:
    runs.write("run\\n")
# Within the loader's five-minute margin: every check of the credential renews it.
expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {"token": (here / "token").read_text(),
               "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
}))
"""


def exec_kubeconfig(fake_kube, tmp_path: Path) -> Path:
    (tmp_path / "plugin.py").write_text(PLUGIN)
    (tmp_path / "token").write_text(fake_kube.token)
    config = yaml.safe_load(fake_kube.kubeconfig.read_text())
    config["users"] = [{"name": "fake", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": [str(tmp_path / "plugin.py"), str(tmp_path)],
    }}}]
    path = tmp_path / "exec-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def plugin_runs(tmp_path: Path) -> int:
    return len((tmp_path / "runs").read_text().splitlines())


def test_an_expiring_credential_is_not_renewed_before_every_request(fake_kube, tmp_path):
    fake_kube.require_token = True
    cluster = Cluster.from_config(str(exec_kubeconfig(fake_kube, tmp_path)),
                                  retry=RetryPolicy(attempts=1), credential_check_every_s=60)
    for _ in range(10):
        assert cluster.get("v1", "Namespace", None, "default") is not None
    # Loading the kubeconfig, then the first check; the stock hook runs the plugin before every
    # request (20 runs here, discovery included).
    assert plugin_runs(tmp_path) == 2


def test_a_rotated_token_is_used_once_the_check_interval_passed(fake_kube, tmp_path):
    fake_kube.require_token = True
    cluster = Cluster.from_config(str(exec_kubeconfig(fake_kube, tmp_path)),
                                  retry=RetryPolicy(attempts=1), credential_check_every_s=0.2)
    assert cluster.get("v1", "Namespace", None, "default") is not None
    fake_kube.token = "rotated-token"
    (tmp_path / "token").write_text("rotated-token")
    time.sleep(0.3)
    assert cluster.get("v1", "Namespace", None, "default") is not None
    view = cluster.impersonating("system:serviceaccount:team-a:deployer")
    time.sleep(0.3)
    fake_kube.token = "rotated-again"
    (tmp_path / "token").write_text("rotated-again")
    time.sleep(0.3)
    assert view.get("v1", "Namespace", None, "default") is not None
