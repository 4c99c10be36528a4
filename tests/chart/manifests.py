#!/usr/bin/env python3
"""Helpers of tests/chart/check.sh that read `helm template` output (a multi-document YAML stream).

  manifests.py split RENDERED NATIVE_OUT CRD_OUT      native Kubernetes kinds to NATIVE_OUT (for kubernetes-validate),
                                                      monitoring.coreos.com kinds to CRD_OUT; prints the counts
  manifests.py config RENDERED OUT                    the ConfigMap's config.yaml to OUT
  manifests.py secret RENDERED NAME_SUFFIX DIR        the data of the Secret whose name ends with NAME_SUFFIX, one
                                                      file per key in DIR (decoded)
  manifests.py rules RENDERED OUT ORIGINAL            the PrometheusRule's spec as a rules file to OUT; fails unless
                                                      its groups equal those of ORIGINAL (observability/rules/...)
  manifests.py servicemonitor RENDERED                the ServiceMonitor's fields, checked against the metrics Service
  manifests.py dashboards RENDERED DIR                the dashboard ConfigMap: sidecar label, one key per JSON file of
                                                      DIR, each equal to it
  manifests.py expect SCENARIO RENDERED               the expectations of one scenario (values file name), below
  manifests.py script RENDERED CONTAINER OUT          an init container's shell script to OUT, its plain env to OUT.env

Every check raises (exit status 1) with a message naming what differs.
"""
import base64
import json
import os
import sys

import yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name_suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind} named *{name_suffix}, found {len(found)}")
    return found[0]


def maybe(docs, kind, name_suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return found[0] if found else None


class Failures:
    def __init__(self):
        self.items = []

    def eq(self, got, want, what):
        if got != want:
            self.items.append(f"{what}: expected {want!r}, got {got!r}")

    def true(self, cond, what):
        if not cond:
            self.items.append(what)

    def done(self, scenario):
        if self.items:
            for i in self.items:
                print(f"  {scenario}: {i}", file=sys.stderr)
            raise SystemExit(1)
        print(f"{scenario}: all expectations met")


def workload(docs):
    w = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    if len(w) != 1:
        raise SystemExit(f"expected one Deployment or DaemonSet, found {len(w)}")
    return w[0]


def container(pod, name):
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        if c["name"] == name:
            return c
    raise SystemExit(f"no container {name}")


def volume(pod, name):
    for v in pod.get("volumes", []):
        if v["name"] == name:
            return v
    return None


def server_config(docs):
    cm = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
    if len(cm) != 1:
        raise SystemExit(f"expected one ConfigMap with config.yaml, found {len(cm)}")
    return yaml.safe_load(cm[0]["data"]["config.yaml"]), cm[0]


def common(f, docs, w):
    """What every scenario must have: labels, security context, probes' paths, config mount and arguments."""
    pod = w["spec"]["template"]["spec"]
    c = container(pod, "ociregistry")
    for d in docs:
        labels = d["metadata"].get("labels", {})
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                  "app.kubernetes.io/managed-by", "helm.sh/chart"):
            f.true(k in labels, f"{d['kind']}/{d['metadata']['name']} lacks label {k}")
    sel = w["spec"]["selector"]["matchLabels"]
    tl = w["spec"]["template"]["metadata"]["labels"]
    f.true(all(tl.get(k) == v for k, v in sel.items()), "pod labels do not match the selector")
    psc = pod["securityContext"]
    f.eq(psc.get("runAsNonRoot"), True, "runAsNonRoot")
    f.eq(psc.get("runAsUser"), 65532, "runAsUser")
    f.eq(psc.get("runAsGroup"), 65532, "runAsGroup")
    f.eq(psc.get("seccompProfile"), {"type": "RuntimeDefault"}, "seccompProfile")
    sc = c["securityContext"]
    f.eq(sc.get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem")
    f.eq(sc.get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation")
    f.eq(sc.get("capabilities", {}).get("drop"), ["ALL"], "capabilities.drop")
    f.eq(c["args"][:3], ["serve", "--config-file", "/etc/ociregistry/config.yaml"], "server arguments")
    f.true({"name": "OCIREGISTRY_CONFIG", "value": "/etc/ociregistry/config.yaml"} in c["env"],
           "OCIREGISTRY_CONFIG env (for kubectl exec ... ociregistry list)")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    f.true("/etc/ociregistry/config.yaml" in mounts, "config.yaml not mounted")
    f.true("/var/lib/ociregistry" in mounts, "data dir not mounted")
    f.eq(pod.get("automountServiceAccountToken"), False, "automountServiceAccountToken")
    cfg, cm = server_config(docs)
    f.eq(volume(pod, "config")["configMap"]["name"], cm["metadata"]["name"], "config volume's ConfigMap")
    f.eq(cfg["data_dir"], "/var/lib/ociregistry", "config data_dir")
    port = [p for p in c["ports"] if p["name"] == "http"][0]["containerPort"]
    f.eq(cfg["listen"], f"0.0.0.0:{port}", "config listen vs containerPort")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        p = c.get(probe)
        if p and "httpGet" in p:
            f.eq(p["httpGet"]["path"], path, f"{probe} path")
            f.eq(p["httpGet"]["port"], "http", f"{probe} port")
            f.eq(p["httpGet"]["scheme"], "HTTPS" if "server_tls" in cfg else "HTTP", f"{probe} scheme")
    return pod, c, cfg


def expect(scenario, docs):
    f = Failures()
    w = workload(docs)
    pod, c, cfg = common(f, docs, w)
    kinds = sorted(d["kind"] for d in docs)
    svc = maybe(docs, "Service", "ociregistry") or maybe(docs, "Service", "mirror") or maybe(docs, "Service", "cache")
    if scenario == "default":
        f.eq(w["kind"], "Deployment", "kind")
        f.eq(w["spec"]["replicas"], 1, "replicas")
        f.eq(w["spec"]["strategy"], {"type": "Recreate"}, "strategy")
        f.eq(c["image"], "ociregistry:0.2.0", "image (tag = appVersion)")
        f.eq(c["imagePullPolicy"], "IfNotPresent", "pullPolicy")
        f.eq(svc["spec"]["type"], "NodePort", "Service type")
        f.eq(svc["spec"]["ports"][0]["nodePort"], 31080, "nodePort")
        f.eq(svc["spec"]["ports"][0]["port"], 8080, "Service port")
        pvc = one(docs, "PersistentVolumeClaim")
        f.eq(pvc["spec"]["resources"]["requests"]["storage"], "20Gi", "PVC size")
        f.eq(pvc["spec"]["accessModes"], ["ReadWriteOnce"], "PVC accessModes")
        f.true("storageClassName" not in pvc["spec"], "PVC storageClassName should be unset (default class)")
        f.eq(volume(pod, "data")["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"], "data volume claim")
        f.eq(cfg["listen"], "0.0.0.0:8080", "listen")
        f.true("server_tls" not in cfg and "metrics" not in cfg and "registries" not in cfg, "default config extras")
        f.true("mirrors" not in cfg and "mirror_fallback" not in cfg, "no mirror keys by default")
        f.eq(c["resources"], {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}, "resources")
        f.eq(one(docs, "PodDisruptionBudget")["spec"].get("maxUnavailable"), 1, "PDB maxUnavailable")
        f.true("Secret" not in kinds, "no Secret without credentials")
        f.true("initContainers" not in pod, "no init containers")
        f.true(all(k not in kinds for k in ("ServiceMonitor", "PrometheusRule")), "no CRDs by default")
    elif scenario == "deployment-full":
        f.eq(w["metadata"]["name"], "mirror", "fullnameOverride")
        f.eq(c["image"], "registry.example/ociregistry:0.2.0-test", "image")
        f.eq(c["imagePullPolicy"], "Always", "pullPolicy")
        f.eq(pod["imagePullSecrets"], [{"name": "regcred"}], "imagePullSecrets")
        f.eq(svc["spec"]["type"], "LoadBalancer", "Service type")
        f.eq(svc["spec"]["externalTrafficPolicy"], "Local", "externalTrafficPolicy")
        f.eq(svc["spec"]["ports"][0], {"name": "http", "port": 443, "targetPort": "http", "protocol": "TCP", "nodePort": 31443}, "Service port")
        pvc = one(docs, "PersistentVolumeClaim")
        f.eq(pvc["spec"]["storageClassName"], "fast-ssd", "storageClassName")
        f.eq(pvc["spec"]["accessModes"], ["ReadWriteOncePod"], "accessModes")
        f.eq(pvc["metadata"]["annotations"], {"helm.sh/resource-policy": "keep"}, "PVC annotations")
        st = cfg["server_tls"]
        f.eq(st, {"cert_file": "/etc/ociregistry/tls/tls.crt", "key_file": "/etc/ociregistry/tls/tls.key",
                  "client_ca_file": "/etc/ociregistry/tls/ca.crt", "client_auth": "require"}, "server_tls")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            f.eq(c[probe].get("tcpSocket"), {"port": "http"}, f"{probe}: TCP with client certificates required")
        tls = one(docs, "Secret", "-tls")
        f.eq(tls["type"], "kubernetes.io/tls", "TLS secret type")
        f.eq(sorted(tls["data"]), ["ca.crt", "tls.crt", "tls.key"], "TLS secret keys")
        f.eq(volume(pod, "server-tls")["secret"]["secretName"], tls["metadata"]["name"], "TLS volume")
        f.eq(cfg["metrics"], 2112, "metrics")
        f.true({"name": "metrics", "containerPort": 2112, "protocol": "TCP"} in c["ports"], "metrics container port")
        regs = {r["name"]: r for r in cfg["registries"]}
        corp = regs["registry.corp.example:5443"]
        sd = "/etc/ociregistry/secrets/registry.corp.example_5443"
        f.eq(corp["auth"], {"username": "cache", "password_file": sd + "-password"}, "corp auth")
        f.eq(corp["tls"], {"ca_file": sd + "-ca.crt", "cert_file": sd + "-client.crt", "key_file": sd + "-client.key"}, "corp tls")
        f.eq(corp["aliases"], ["corp"], "aliases")
        f.eq(corp["tag_ttl"], "5m", "tag_ttl")
        f.eq(corp["immutable_tags"], ["v*.*.*"], "immutable_tags")
        f.eq(corp["max_concurrent_fetches"], 8, "max_concurrent_fetches")
        f.eq(regs["ghcr.io"]["auth"], "passthrough", "passthrough")
        f.eq(regs["docker.io"]["auth"], {"username": "robot", "password_env": "DOCKERHUB_TOKEN"}, "password_env")
        f.eq(regs["docker.io"]["endpoints"], ["https://dockerhub-mirror.corp.example", "https://registry-1.docker.io"], "endpoints")
        sec = one(docs, "Secret", "-upstreams")
        f.eq(sorted(sec["data"]), sorted(["registry.corp.example_5443-" + k for k in ("password", "ca.crt", "client.crt", "client.key")]), "upstream Secret keys")
        f.eq(base64.b64decode(sec["data"]["registry.corp.example_5443-password"]).decode(), "s3cr3t-Chart-PW", "password in Secret")
        f.eq(volume(pod, "upstream-secrets")["secret"]["secretName"], sec["metadata"]["name"], "secrets volume")
        f.true(any(m["mountPath"] == "/etc/ociregistry/secrets" for m in c["volumeMounts"]), "secrets mount")
        f.eq(cfg["prune_older_than"], "30d", "prune_older_than")
        f.eq(cfg["prune_interval"], "30m", "prune_interval")
        f.eq(cfg["max_cache_bytes"], "80GiB", "max_cache_bytes")
        f.eq(cfg["min_free_bytes"], "1GiB", "min_free_bytes")
        f.eq(cfg["unlisted_upstreams"], "deny", "unlisted_upstreams")
        f.eq(cfg["allowed_upstreams"], ["*.example.com", "ghcr.io"], "allowed_upstreams")
        f.eq(cfg["log_format"], "json", "log_format")
        f.eq(cfg["log_level"], "info,access=off", "log_level")
        f.eq((cfg["tag_ttl"], cfg["hot_cache_bytes"], cfg["metrics_repositories"]), ("30m", 33554432, True), "config merged")
        f.eq(c["args"][3:], ["--log-level", "info"], "extraArgs")
        f.true(any(e["name"] == "DOCKERHUB_TOKEN" and "valueFrom" in e for e in c["env"]), "extraEnv")
        f.eq(c["resources"]["limits"]["memory"], "512Mi", "resources")
        f.eq(pod["nodeSelector"], {"kubernetes.io/os": "linux"}, "nodeSelector")
        f.eq(pod["tolerations"][0]["key"], "dedicated", "tolerations")
        f.true("nodeAffinity" in pod["affinity"], "affinity")
        f.eq(pod["priorityClassName"], "system-cluster-critical", "priorityClassName")
        f.eq(pod["serviceAccountName"], "mirror-sa", "serviceAccountName")
        f.eq(one(docs, "ServiceAccount")["metadata"]["name"], "mirror-sa", "ServiceAccount")
        f.eq(w["spec"]["template"]["metadata"]["annotations"].get("example.com/team"), "platform", "podAnnotations")
        f.eq(w["spec"]["template"]["metadata"]["labels"].get("example.com/tier"), "infra", "podLabels")
        f.true("checksum/secret" in w["spec"]["template"]["metadata"]["annotations"], "secret checksum annotation")
        for k in ("ServiceMonitor", "PrometheusRule"):
            f.eq(kinds.count(k), 1, k)
        f.eq(one(docs, "ServiceMonitor")["metadata"]["labels"].get("release"), "kube-prometheus-stack", "ServiceMonitor labels")
        f.eq(one(docs, "ConfigMap", "-dashboards")["metadata"].get("annotations"), {"grafana_folder": "ociregistry"}, "dashboard annotations")
    elif scenario == "daemonset-hostpath":
        f.eq(w["kind"], "DaemonSet", "kind")
        f.eq(w["spec"]["updateStrategy"], {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}, "updateStrategy")
        f.eq([p.get("hostPort") for p in c["ports"] if p["name"] == "http"], [5080], "hostPort")
        f.true(not pod.get("hostNetwork"), "hostNetwork off")
        f.eq(volume(pod, "data")["hostPath"], {"path": "/var/lib/ociregistry", "type": "DirectoryOrCreate"}, "hostPath")
        f.true("PersistentVolumeClaim" not in kinds, "no PVC")
        names = [i["name"] for i in pod["initContainers"]]
        f.eq(names, ["volume-permissions", "containerd-configurator"], "init containers")
        for i in pod["initContainers"]:
            f.eq(i["image"], "docker.io/library/busybox:1.36", f"{i['name']} image")
            f.eq(i["securityContext"]["allowPrivilegeEscalation"], False, f"{i['name']} allowPrivilegeEscalation")
            f.eq(i["securityContext"]["capabilities"]["drop"], ["ALL"], f"{i['name']} drop ALL")
        f.eq(container(pod, "volume-permissions")["securityContext"]["capabilities"]["add"], ["CHOWN", "DAC_READ_SEARCH"], "chown caps")
        cc = container(pod, "containerd-configurator")
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in cc["env"]}
        f.eq(env["HOST_IP"], {"fieldRef": {"fieldPath": "status.hostIP"}}, "HOST_IP from status.hostIP")
        f.eq((env["REGISTRIES"], env["SCHEME"], env["PORT"]), ("_default docker.io", "http", "5080"), "configurator env")
        f.eq(volume(pod, "containerd-certs")["hostPath"], {"path": "/etc/containerd/certs.d", "type": "DirectoryOrCreate"}, "certs.d hostPath")
        f.eq(svc["spec"]["type"], "ClusterIP", "Service type")
        f.true("nodePort" not in svc["spec"]["ports"][0], "no nodePort on ClusterIP")
        f.eq(pod["tolerations"], [{"operator": "Exists"}], "tolerations")
        f.eq(cfg["max_cache_bytes"], "20GiB", "max_cache_bytes")
        f.eq(cfg["prune_older_than"], "14d", "prune_older_than")
    elif scenario == "daemonset-hostnetwork-tls":
        f.eq(w["kind"], "DaemonSet", "kind")
        f.eq(pod.get("hostNetwork"), True, "hostNetwork")
        f.eq(pod.get("dnsPolicy"), "ClusterFirstWithHostNet", "dnsPolicy")
        f.true(all("hostPort" not in p for p in c["ports"]), "no hostPort with hostNetwork")
        f.eq(cfg["listen"], "0.0.0.0:5443", "listen")
        f.eq(volume(pod, "data")["emptyDir"], {"sizeLimit": "30Gi"}, "emptyDir")
        f.eq(cfg["server_tls"], {"cert_file": "/etc/ociregistry/tls/tls.crt", "key_file": "/etc/ociregistry/tls/tls.key",
                                 "client_ca_file": "/etc/ociregistry/tls/ca.crt", "client_auth": "optional"}, "server_tls")
        f.eq(volume(pod, "server-tls")["secret"]["secretName"], "mirror-tls", "TLS from secretName")
        f.true("Secret" not in kinds, "no Secret created for secretName")
        f.eq(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS", "HTTPS probe")
        names = [i["name"] for i in pod["initContainers"]]
        f.eq(names, ["containerd-configurator"], "init containers (no chown for emptyDir)")
        env = {e["name"]: e.get("value") for e in container(pod, "containerd-configurator")["env"]}
        f.eq((env["SCHEME"], env["PORT"], env["SKIP_VERIFY"]), ("https", "5443", "true"), "configurator env")
        f.eq(svc["spec"]["ports"][0]["nodePort"], 30443, "nodePort")
        f.true("PodDisruptionBudget" not in kinds, "PDB disabled")
    elif scenario == "daemonset-tiered-node":
        f.eq(w["kind"], "DaemonSet", "kind")
        f.eq(cfg["mirrors"], ["http://site-ociregistry.registry.svc.cluster.local:8080"], "mirrors")
        f.eq(cfg["mirror_fallback"], False, "mirror_fallback")
        regs = {r["name"]: r for r in cfg["registries"]}
        f.eq(regs["registry.internal:5000"].get("mirrors"), [], "registries[].mirrors: [] (fetched directly)")
        f.eq(regs["registry.internal:5000"].get("scheme"), "http", "scheme")
    elif scenario == "existing-secret-claim":
        f.true("Secret" not in kinds, "no Secret with existingSecret")
        f.true("PersistentVolumeClaim" not in kinds, "no PVC with existingClaim")
        f.true("ServiceAccount" not in kinds, "no ServiceAccount")
        f.eq(pod["serviceAccountName"], "default", "serviceAccountName")
        f.eq(volume(pod, "data")["persistentVolumeClaim"]["claimName"], "ociregistry-cache", "existingClaim")
        f.eq(volume(pod, "upstream-secrets")["secret"]["secretName"], "upstream-creds", "existingSecret volume")
        regs = {r["name"]: r for r in cfg["registries"]}
        f.eq(regs["registry.corp.example:5443"]["auth"],
             {"username": "cache", "password_file": "/etc/ociregistry/secrets/registry.corp.example_5443-password"}, "auth from existingSecret")
        f.eq(regs["registry.corp.example:5443"]["tls"], {"ca_file": "/etc/ociregistry/secrets/corp-ca.crt"}, "tls ca_file")
        f.eq(regs["harbor.example.com"]["auth"], {"username": "robot$cache", "password_file": "/etc/ociregistry/secrets/harbor-robot"}, "password_file")
        f.eq(cfg["air_gapped"], True, "air_gapped")
        f.eq(svc["spec"]["type"], "NodePort", "Service type")
        f.true("nodePort" not in svc["spec"]["ports"][0], "nodePort null: Kubernetes picks")
    elif scenario == "emptydir-replicas":
        f.eq(w["metadata"]["name"], "t-cache", "nameOverride")
        f.eq(w["spec"]["replicas"], 2, "replicas")
        f.true("strategy" not in w["spec"], "rolling update with emptyDir")
        f.eq(volume(pod, "data")["emptyDir"], {}, "emptyDir")
        f.true("livenessProbe" not in c and "startupProbe" not in c, "probes disabled")
        f.true("readinessProbe" in c, "readiness probe")
        f.eq(one(docs, "PodDisruptionBudget")["spec"].get("minAvailable"), 1, "PDB minAvailable")
        f.true("maxUnavailable" not in one(docs, "PodDisruptionBudget")["spec"], "PDB: one of min/max")
        f.eq(svc["spec"]["ports"][0]["port"], 80, "Service port")
    elif scenario in ("s3-replicas", "s3-existing-secret"):
        s3 = cfg.get("s3") or {}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        f.eq(mounts.get("s3-credentials", {}).get("mountPath"), "/etc/ociregistry/s3", "S3 Secret mount")
        f.eq(mounts.get("s3-credentials", {}).get("readOnly"), True, "S3 Secret mount read-only")
        f.eq(s3.get("access_key_id_file"), "/etc/ociregistry/s3/access-key-id", "s3.access_key_id_file")
        f.eq(s3.get("secret_access_key_file"), "/etc/ociregistry/s3/secret-access-key", "s3.secret_access_key_file")
        f.true("replica_id" not in s3, "s3.replica_id left to the host name (the pod's name)")
        f.true(not any(k in s3 for k in ("access_key_id", "secret_access_key")), "no inline credentials")
        vol = (volume(pod, "s3-credentials") or {}).get("secret", {})
        f.eq(vol.get("defaultMode"), 0o440, "S3 Secret defaultMode")
        secrets = [d for d in docs if d["kind"] == "Secret"]
        if scenario == "s3-replicas":
            f.eq(s3, {"endpoint": "https://s3.storage.example.com:9000", "bucket": "ociregistry-cache",
                      "prefix": "site-a/", "region": "garage", "path_style": False, "local_tier": False,
                      "refs_interval": "2m", "timeout": "1m",
                      "access_key_id_file": "/etc/ociregistry/s3/access-key-id",
                      "secret_access_key_file": "/etc/ociregistry/s3/secret-access-key",
                      "ca_file": "/etc/ociregistry/s3/ca.crt"}, "s3 config")
            sec = one(docs, "Secret", "-s3")
            f.eq(sec["metadata"]["name"], "t-ociregistry-s3", "S3 Secret name")
            f.eq(sorted(sec["data"]), ["access-key-id", "ca.crt", "secret-access-key"], "S3 Secret keys")
            f.eq(base64.b64decode(sec["data"]["access-key-id"]).decode(), "GKchartTestAccessKeyId", "access-key-id")
            f.eq(base64.b64decode(sec["data"]["secret-access-key"]).decode(), "Chart-S3-secret-access-key-5e1f",
                 "secret-access-key")
            f.eq(vol.get("secretName"), "t-ociregistry-s3", "S3 Secret volume")
            f.true("checksum/s3-secret" in w["spec"]["template"]["metadata"]["annotations"], "checksum/s3-secret")
            f.eq(w["kind"], "Deployment", "kind")
            f.eq(w["spec"]["replicas"], 3, "replicas")
            f.true("strategy" not in w["spec"], "rolling update (emptyDir per pod)")
            f.eq(volume(pod, "data").get("emptyDir"), {}, "emptyDir by default with s3.enabled")
            f.true("PersistentVolumeClaim" not in kinds, "no PVC with s3.enabled")
            f.eq(len(secrets), 1, "only the S3 Secret")
        else:
            f.eq(secrets, [], "no Secret with s3.existingSecret")
            f.eq(vol.get("secretName"), "minio-ociregistry", "existingSecret volume")
            f.eq(s3.get("ca_file"), "/etc/ociregistry/s3/ca.crt", "s3.ca_file from caFile")
            f.eq((s3.get("region"), s3.get("path_style"), s3.get("local_tier"), s3.get("refs_interval"), s3.get("timeout")),
                 ("us-east-1", True, True, "5m", "30s"), "s3 defaults")
            f.true("prefix" not in s3, "empty prefix left out")
            f.true("checksum/s3-secret" not in w["spec"]["template"]["metadata"]["annotations"], "no checksum without data")
            f.eq(w["spec"]["replicas"], 1, "replicas")
            f.eq(volume(pod, "data")["persistentVolumeClaim"]["claimName"], "t-ociregistry", "explicit pvc")
    elif scenario == "pvc-nostorageclass":
        pvc = one(docs, "PersistentVolumeClaim")
        f.eq(pvc["spec"]["storageClassName"], "", "storageClassName \"-\" -> \"\"")
        f.eq(pvc["spec"]["resources"]["requests"]["storage"], "5Gi", "size")
        f.true("Service" not in kinds, "Service disabled")
    else:
        raise SystemExit(f"no expectations for scenario {scenario}")
    f.done(scenario)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "split":
        docs = load(args[0])
        native = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
        crds = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
        for out, ds in ((args[1], native), (args[2], crds)):
            with open(out, "w") as f:
                yaml.safe_dump_all(ds, f, sort_keys=False)
        print(f"{len(native)} native, {len(crds)} monitoring.coreos.com")
    elif cmd == "config":
        cfg, cm = server_config(load(args[0]))
        with open(args[1], "w") as f:
            f.write(cm["data"]["config.yaml"])
    elif cmd == "secret":
        sec = one(load(args[0]), "Secret", args[1])
        os.makedirs(args[2], exist_ok=True)
        for k, v in sec["data"].items():
            with open(os.path.join(args[2], k), "wb") as f:
                f.write(base64.b64decode(v))
        print(f"{len(sec['data'])} keys: {' '.join(sorted(sec['data']))}")
    elif cmd == "rules":
        rule = one(load(args[0]), "PrometheusRule")
        with open(args[2]) as f:
            original = yaml.safe_load(f)
        if rule["spec"]["groups"] != original["groups"]:
            raise SystemExit("PrometheusRule groups differ from " + args[2])
        with open(args[1], "w") as f:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
        print(f"{sum(len(g['rules']) for g in rule['spec']['groups'])} rules, equal to the original")
    elif cmd == "servicemonitor":
        docs = load(args[0])
        sm = one(docs, "ServiceMonitor")
        f = Failures()
        f.eq(sm["apiVersion"], "monitoring.coreos.com/v1", "apiVersion")
        spec = sm["spec"]
        f.eq(sorted(spec), ["endpoints", "jobLabel", "namespaceSelector", "selector"], "spec fields")
        msvc = [d for d in docs if d["kind"] == "Service"
                and all(d["metadata"]["labels"].get(k) == v for k, v in spec["selector"]["matchLabels"].items())]
        f.eq(len(msvc), 1, "Services the ServiceMonitor selects")
        if msvc:
            svc = msvc[0]
            f.true(spec["jobLabel"] in svc["metadata"]["labels"], "jobLabel names a label of the Service")
            f.eq(svc["metadata"]["labels"].get(spec["jobLabel"]), "ociregistry", "job label value (the dashboards' default job)")
            ports = {p["name"]: p for p in svc["spec"]["ports"]}
            for e in spec["endpoints"]:
                f.eq(sorted(e), ["interval", "path", "port", "scheme"], "endpoint fields")
                f.true(e["port"] in ports, f"endpoint port {e['port']} is a port of the Service")
                f.eq(e["path"], "/metrics", "path")
                f.eq(e["scheme"], "http", "scheme")
                f.true(e["interval"][-1] in "smh", "interval")
            w = workload(docs)
            c = container(w["spec"]["template"]["spec"], "ociregistry")
            cports = {p["name"]: p["containerPort"] for p in c["ports"]}
            f.true(all(p["targetPort"] in cports for p in svc["spec"]["ports"]), "targetPort names a container port")
            cfg, _ = server_config(docs)
            f.eq(cfg.get("metrics"), cports.get("metrics"), "server metrics port = container metrics port")
        f.eq(spec["namespaceSelector"], {"matchNames": [sm["metadata"]["namespace"]]} if "namespace" in sm["metadata"]
             else spec["namespaceSelector"], "namespaceSelector")
        f.done("ServiceMonitor")
    elif cmd == "dashboards":
        cm = one(load(args[0]), "ConfigMap", "-dashboards")
        f = Failures()
        f.eq(cm["metadata"]["labels"].get("grafana_dashboard"), "1", "grafana_dashboard label")
        files = sorted(n for n in os.listdir(args[1]) if n.endswith(".json"))
        f.eq(sorted(cm["data"]), files, "dashboard keys")
        for n in files:
            with open(os.path.join(args[1], n)) as fh:
                f.true(json.loads(cm["data"].get(n, "null")) == json.load(fh), f"{n} differs from {args[1]}/{n}")
        f.done("dashboards")
    elif cmd == "expect":
        expect(args[0], load(args[1]))
    elif cmd == "script":
        pod = workload(load(args[0]))["spec"]["template"]["spec"]
        c = container(pod, args[1])
        with open(args[2], "w") as f:
            f.write(c["command"][2])
        with open(args[2] + ".env", "w") as f:
            for e in c["env"]:
                if "value" in e:
                    f.write(f"{e['name']}={e['value']}\n")
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
