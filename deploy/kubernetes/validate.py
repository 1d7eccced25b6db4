#!/usr/bin/env python3
"""Renders each overlay under deploy/kubernetes/overlays the way Kustomize does and checks
the result: every document against the Kubernetes schemas of KUBERNETES_VERSION (from the
kubernetes-validate package, offline), then what the schemas cannot say — the probes use
the admin port of routes.yaml, the grace period is above twice shutdown_grace, the container
runs as a numeric non-root user on a read-only root with no capabilities, every Secret and
ConfigMap it names exists, routes.yaml passes `switchyard check` with just the variables the
container gets, and its arguments parse.

The renderer understands the subset of kustomization.yaml these overlays use: `resources`
(files, or directories with a kustomization.yaml) and `patches` with a `path` (strategic
merge patches of maps, matched by kind and name). Anything else is refused rather than
ignored. When `kubectl` is on the PATH, its `kubectl kustomize` output must match.

Usage: validate.py SWITCHYARD_BINARY
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"
ROOT = Path(__file__).resolve().parent
OVERLAYS = ["standalone", "sidecar", "nats"]
# Validated by the checks below, not against a schema: kubernetes-validate ships the
# built-in kinds only, and the Prometheus Operator's CRD schema is not vendored here.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}
KNOWN_FIELDS = {"apiVersion", "kind", "resources", "patches"}

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")


# --- rendering -------------------------------------------------------------------------


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    """The documents of a kustomization directory, patches applied."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise SystemExit(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    documents = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        documents += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise SystemExit(f"{directory}: only `patches: - path: FILE` is supported")
        for document in load_documents(directory / patch["path"]):
            target = find(documents, document["kind"], document["metadata"]["name"])
            if target is None:
                raise SystemExit(f"{directory}: patch {patch['path']} matches no resource")
            merge(target, document, patch["path"])
    return documents


def find(documents, kind, name):
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    return None


def merge(target, patch, where):
    """A strategic merge patch of maps; a list in a patch replaces the target's, which is
    what Kustomize does for lists without a merge key — lists with one are refused."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, where)
        elif isinstance(value, list) and any(isinstance(v, dict) and "name" in v for v in value):
            raise SystemExit(f"{where}: lists merged by name are not supported ({key})")
        else:
            target[key] = value


def normalized(documents):
    return {(d["kind"], d["metadata"]["name"]): json.dumps(d, sort_keys=True) for d in documents}


def compare_with_kubectl(overlay, documents):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "overlays" / overlay)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        fail(overlay, f"kubectl kustomize failed: {out.stderr.strip()}")
        return
    theirs = normalized([d for d in yaml.safe_load_all(out.stdout) if d])
    ours = normalized(documents)
    if theirs != ours:
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        fail(overlay, f"differs from kubectl kustomize in {differ}")


# --- checks ----------------------------------------------------------------------------


def validate_schemas(overlay, documents):
    for document in documents:
        key = (document["apiVersion"], document["kind"])
        where = f"{overlay}: {document['kind']}/{document['metadata']['name']}"
        if key in NO_SCHEMA:
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(where, f"{e.message} at {'.'.join(str(p) for p in e.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"no schema in Kubernetes {KUBERNETES_VERSION}")


def seconds(duration):
    total = 0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d)", duration):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def switchyard_container(pod):
    for key in ("initContainers", "containers"):
        for container in pod.get(key, []):
            if container["name"] == "switchyard":
                return key, container
    return None, None


def check_workload(overlay, workload, documents, binary):
    where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    key, container = switchyard_container(pod)
    if container is None:
        fail(where, "no container named switchyard")
        return
    if overlay == "sidecar" and (key != "initContainers" or container.get("restartPolicy") != "Always"):
        fail(where, "the sidecar is not an init container with restartPolicy: Always")

    config_map = next(
        (v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v), None
    )
    cm = find(documents, "ConfigMap", config_map or "")
    if cm is None:
        fail(where, f"ConfigMap {config_map} is not in the overlay")
        return
    routes_text = cm["data"]["routes.yaml"]
    routes = yaml.safe_load(routes_text)

    # Probes on the admin port.
    admin_port = int(routes.get("admin_listen", "127.0.0.1:9090").rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            fail(where, f"no {probe} with httpGet")
            continue
        port = ports.get(get["port"], get["port"])
        if port != admin_port or get["path"] != path:
            fail(where, f"{probe} asks {port}{get['path']}, not the admin port {admin_port}{path}")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    shutdown_grace = seconds(routes.get("shutdown_grace", "30s"))
    if grace <= 2 * shutdown_grace:
        fail(where, f"terminationGracePeriodSeconds {grace} is not above 2 × {shutdown_grace}s")

    security = container.get("securityContext", {})
    user = security.get("runAsUser")
    if not (isinstance(user, int) and user > 0 and security.get("runAsNonRoot") is True):
        fail(where, "not a numeric non-root user (runAsUser, runAsNonRoot)")
    if security.get("readOnlyRootFilesystem") is not True:
        fail(where, "root file system is writable")
    if security.get("allowPrivilegeEscalation") is not False:
        fail(where, "privilege escalation allowed")
    if security.get("capabilities", {}).get("drop") != ["ALL"] or security["capabilities"].get("add"):
        fail(where, "capabilities are not all dropped")
    resources = container.get("resources", {})
    if not {"cpu", "memory"} <= set(resources.get("requests", {})) or "memory" not in resources.get("limits", {}):
        fail(where, "resources lack cpu/memory requests or a memory limit")

    # The spool: a volume claim (standalone), none (nats).
    spool = routes.get("spool", {})
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    claims = [c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])]
    if overlay == "standalone" and mounts.get(spool.get("path")) not in claims:
        fail(where, "the spool path is not on a volume claim")
    if overlay == "nats":
        if spool.get("backend") != "nats" or workload["spec"].get("replicas") != 3:
            fail(where, "not three replicas on the nats backend")
        if spool.get("path", "./data") in mounts or claims:
            fail(where, "the nats overlay mounts a spool volume")

    # Secrets and keys the container reads exist.
    env = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = find(documents, "Secret", ref["name"])
            if secret is None or ref["key"] not in secret.get("stringData", {}):
                fail(where, f"{variable['name']}: Secret {ref['name']} has no key {ref['key']}")
        env[variable["name"]] = variable.get("value", "placeholder-" + variable["name"].lower())

    # routes.yaml is valid with only the container's variables; the arguments parse.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(routes_text)
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        out = subprocess.run([binary, "check", "--config", str(path)],
                             capture_output=True, text=True, env=clean, check=False)
        if out.returncode != 0:
            fail(where, f"routes.yaml fails `switchyard check`:\n{out.stderr}{out.stdout}")
    out = subprocess.run([binary, *container.get("args", []), "--help"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        fail(where, f"arguments {container.get('args')} do not parse: {out.stderr.strip()}")


def check_monitoring(overlay, documents):
    for monitor in (d for d in documents if d["kind"] == "ServiceMonitor"):
        where = f"{overlay}: ServiceMonitor/{monitor['metadata']['name']}"
        labels = monitor["spec"]["selector"]["matchLabels"]
        services = [
            d for d in documents
            if d["kind"] == "Service"
            and labels.items() <= d["metadata"].get("labels", {}).items()
        ]
        if len(services) != 1:
            fail(where, f"selects {len(services)} Services, not one")
        for endpoint in monitor["spec"]["endpoints"]:
            if not any(p.get("name") == endpoint["port"] for s in services for p in s["spec"]["ports"]):
                fail(where, f"no selected Service has a port named {endpoint['port']}")
            credentials = endpoint.get("authorization", {}).get("credentials", {})
            secret = find(documents, "Secret", credentials.get("name", ""))
            if secret is None or credentials.get("key") not in secret.get("stringData", {}):
                fail(where, "does not send the admin token from the Secret")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = sys.argv[1]
    for overlay in OVERLAYS:
        documents = render(ROOT / "overlays" / overlay)
        compare_with_kubectl(overlay, documents)
        validate_schemas(overlay, documents)
        workloads = [d for d in documents if d["kind"] in ("Deployment", "StatefulSet")]
        if len(workloads) != 1:
            fail(overlay, f"{len(workloads)} workloads, expected one")
        for workload in workloads:
            check_workload(overlay, workload, documents, binary)
        check_monitoring(overlay, documents)
        kinds = ", ".join(sorted(f"{d['kind']}/{d['metadata']['name']}" for d in documents))
        print(f"{overlay}: {kinds}")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        raise SystemExit(1)
    print(f"every overlay renders and validates against Kubernetes {KUBERNETES_VERSION}")


if __name__ == "__main__":
    main()
