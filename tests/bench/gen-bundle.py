#!/usr/bin/env python3
"""Writes the distribution benchmark's bundle: N ConfigMaps, M Secrets and K Deployments (each
Deployment mounting one ConfigMap and one Secret) in NAMESPACE, one file per kind."""
import json, os, sys

out, namespace = sys.argv[1], sys.argv[2]
configmaps, secrets, deployments = (int(x) for x in sys.argv[3:6])
os.makedirs(out, exist_ok=True)

def write(name, docs):
    # One List per kind: both kubectl and kubectl-multicluster read a JSON List.
    with open(os.path.join(out, name.replace(".yaml", ".json")), "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, f)

write("configmaps.yaml", [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": namespace},
     "data": {"index": str(i), "payload": "x" * 256}} for i in range(configmaps)])
write("secrets.yaml", [
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"secret-{i}", "namespace": namespace},
     "stringData": {"password": f"pw-{i}"}} for i in range(secrets)])
write("deployments.yaml", [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"app-{i}", "namespace": namespace},
     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": f"app-{i}"}},
              "template": {"metadata": {"labels": {"app": f"app-{i}"}},
                           "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                                    "envFrom": [{"secretRef": {"name": f"secret-{i % max(secrets, 1)}"}}]}],
                                    "volumes": [{"name": "cfg", "configMap": {"name": f"cm-{i % max(configmaps, 1)}"}}]}}}}
    for i in range(deployments)])
