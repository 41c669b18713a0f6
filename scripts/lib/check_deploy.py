#!/usr/bin/env python3
"""Consistency checks of the shipping files that schema validators cannot see.

Catches the mistakes the old deployment made: a ConfigMap key the binary does not read (DB_USER for
DB_USERNAME), an unquoted value in a ConfigMap, a Service selector that matches no pod, secrets in the Dockerfile,
images tagged only `latest`, a grace period shorter than the service's shutdown.

Usage: check_deploy.py ROOT            check the repository at ROOT
       check_deploy.py --self-test ROOT  break copies of ROOT's files on purpose; every break must be caught
"""
import copy
import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

IMAGE = "767398149973.dkr.ecr.us-east-1.amazonaws.com/coworking-analytics"
SEMVER = r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?"


@functools.cache
def binary_variables(root):
    """What the binary reads: `coworking-analytics variables`, generated from its clap declarations (run in the
    project, also when checking a mutated copy of its deployment files). scripts/test names the developer build
    in COWORKING_BIN: a `cargo run` here would build again in target/debug while the image's build is checked."""
    root = pathlib.Path(__file__).resolve().parents[2]
    given = os.environ.get("COWORKING_BIN")
    command = [given] if given else ["cargo", "run", "--quiet", "--locked", "--bin", "coworking-analytics", "--"]
    out = subprocess.run(command + ["variables"], cwd=root, check=True, capture_output=True, text=True).stdout
    names = set(out.split())
    if not names or not all(re.fullmatch(r"[A-Z0-9_]+", n) for n in names):
        raise SystemExit(f"coworking-analytics variables printed {out!r}")
    return names


def required_variables(root):
    """Variables without a default: the database credentials (unless DATABASE_URL is given)."""
    return {"DB_USERNAME", "DB_PASSWORD"}


def load_docs(root):
    docs = []
    for path in sorted((root / "k8s").glob("*.yaml")) + sorted((root / "k8s" / "readers").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def pod_specs(doc):
    kind = doc.get("kind")
    spec = doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec.get("template", {})]
    if kind == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {})]
    return []


def check(root):
    errors = []
    variables = binary_variables(root)
    docs = load_docs(root)
    configmaps = {d["metadata"]["name"]: (f, d) for f, d in docs if d.get("kind") == "ConfigMap"}
    secrets = {d["metadata"]["name"]: (f, d) for f, d in docs if d.get("kind") == "Secret"}

    # ConfigMap values are strings (an unquoted 5432 is an int in YAML, which the API server rejects).
    for name, (f, d) in configmaps.items():
        for key, value in (d.get("data") or {}).items():
            if not isinstance(value, str):
                errors.append(f"{f}: ConfigMap {name} key {key} has a {type(value).__name__} value; quote it")

    # Services select pods that exist.
    templates = []
    for f, d in docs:
        for t in pod_specs(d):
            templates.append((f, d["metadata"]["name"], t.get("metadata", {}).get("labels", {}) or {}))
    for f, d in docs:
        if d.get("kind") == "Service":
            sel = d.get("spec", {}).get("selector") or {}
            if not sel or not any(all(l.get(k) == v for k, v in sel.items()) for _, _, l in templates):
                errors.append(f"{f}: Service {d['metadata']['name']} selector {sel} matches no pod template")
        if d.get("kind") in ("Deployment", "PodDisruptionBudget"):
            sel = (d.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
            matched = [l for _, _, l in templates if all(l.get(k) == v for k, v in sel.items())]
            if not sel or not matched:
                errors.append(f"{f}: {d['kind']} {d['metadata']['name']} selector {sel} matches no pod template")

    # What our containers are given is what the binary reads, and what it needs is given.
    for f, d in docs:
        for t in pod_specs(d):
            spec = t.get("spec", {})
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                if not c.get("image", "").startswith(IMAGE):
                    continue
                where = f"{f}: {d['kind']} {d['metadata']['name']} container {c['name']}"
                tag = c["image"][len(IMAGE):].lstrip(":")
                if not re.fullmatch(SEMVER, tag):
                    errors.append(f"{where}: image tag {tag!r} is not a semantic version")
                given = set()
                for src in c.get("envFrom", []):
                    ref = src.get("configMapRef") or src.get("secretRef")
                    pool = configmaps if "configMapRef" in src else secrets
                    if ref["name"] not in pool:
                        errors.append(f"{where}: envFrom names {ref['name']}, which k8s/ does not define")
                        continue
                    data = pool[ref["name"]][1]
                    given |= set((data.get("data") or {}).keys()) | set((data.get("stringData") or {}).keys())
                for e in c.get("env", []):
                    given.add(e["name"])
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        s = secrets.get(ref["name"])
                        keys = set(((s or ({}, {}))[1].get("stringData") or {}).keys()) | set(
                            ((s or ({}, {}))[1].get("data") or {}).keys())
                        if s is None or ref["key"] not in keys:
                            errors.append(f"{where}: secret key {ref['name']}/{ref['key']} is not in secret.yaml")
                for key in sorted(given - variables):
                    errors.append(f"{where}: variable {key} is not read by the binary (coworking-analytics variables)")
                if "DATABASE_URL" not in given:
                    for key in sorted(required_variables(root) - given):
                        errors.append(f"{where}: required variable {key} is not provided")
            if d.get("kind") == "Deployment" and any(c.get("image", "").startswith(IMAGE)
                                                     for c in spec.get("containers", [])):
                errors += grace_period_errors(f, d, spec, configmaps)
                errors += keys_mount_errors(f, d, spec, secrets)

    # No Service of the API is internet-facing by default (EKS makes a LoadBalancer public unless told).
    for f, d in docs:
        if d.get("kind") == "Service" and d.get("spec", {}).get("type") == "LoadBalancer":
            notes = (d["metadata"].get("annotations") or {})
            if notes.get("service.beta.kubernetes.io/aws-load-balancer-scheme") != "internal":
                errors.append(f"{f}: Service {d['metadata']['name']} is a LoadBalancer without "
                              "aws-load-balancer-scheme: internal (internet-facing on EKS)")

    errors += dockerfile_errors(root)
    errors += buildspec_errors(root)
    return errors


def seconds(text):
    m = re.fullmatch(r"(\d+)(s|m)?", text.strip())
    if not m:
        return None
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def keys_mount_errors(f, d, spec, secrets):
    """Every serving pod reads its API keys from the Secret, mounted read-only, at the path API_KEYS_FILE names."""
    errors = []
    where = f"{f}: Deployment {d['metadata']['name']}"
    volumes = {v["name"]: v for v in spec.get("volumes", []) if "secret" in v}
    key_volumes = {n for n, v in volumes.items() if v["secret"].get("secretName") == "coworking-api-keys"}
    if "coworking-api-keys" not in secrets:
        errors.append(f"{where}: the Secret coworking-api-keys is not defined in k8s/ (api-keys-secret.yaml)")
    for c in spec.get("containers", []):
        if not c.get("image", "").startswith(IMAGE):
            continue
        path = next((e.get("value") for e in c.get("env", []) if e["name"] == "API_KEYS_FILE"), None)
        mounts = [m for m in c.get("volumeMounts", []) if m["name"] in key_volumes]
        if path is None:
            errors.append(f"{where}: API_KEYS_FILE is not set: every report would be open")
        elif not any(path.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts):
            errors.append(f"{where}: API_KEYS_FILE {path} is not in a mount of the Secret coworking-api-keys")
        for m in mounts:
            if not m.get("readOnly"):
                errors.append(f"{where}: the keys Secret is mounted without readOnly: true")
    return errors


def tls_probe_errors(built):
    """In a build with the k8s/tls component: a container given TLS_CERT_FILE is probed over HTTPS."""
    errors = []
    for d in yaml.safe_load_all(pathlib.Path(built).read_text()):
        for tmpl in pod_specs(d or {}):
            for c in tmpl.get("spec", {}).get("containers", []):
                if not any(e["name"] == "TLS_CERT_FILE" for e in c.get("env", [])):
                    continue
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    get = (c.get(probe) or {}).get("httpGet")
                    if get is not None and get.get("scheme") != "HTTPS":
                        errors.append(f"{d['metadata']['name']}: {probe} is not HTTPS while TLS_CERT_FILE is set")
    return errors


def grace_period_errors(f, d, spec, configmaps):
    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = seconds(next((cm.get("data", {}).get("SHUTDOWN_TIMEOUT", "20s") for _, cm in configmaps.values()),
                            "20s")) or 20
    pause = 0
    for c in spec.get("containers", []):
        cmd = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
        if cmd and cmd[0].endswith("sleep"):
            pause = int(cmd[-1])
    if pause == 0:
        return [f"{f}: Deployment {d['metadata']['name']} has no preStop pause"]
    if grace <= shutdown + pause:
        return [f"{f}: terminationGracePeriodSeconds {grace} is not longer than preStop {pause}s + "
                f"SHUTDOWN_TIMEOUT {shutdown}s"]
    return []


def dockerfile_errors(root):
    errors = []
    text = (root / "Dockerfile").read_text()
    stages = re.split(r"(?im)^FROM\s", text)
    final = stages[-1]
    for line in text.splitlines():
        if re.match(r"(?i)^\s*(ENV|ARG)\b.*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)", line):
            errors.append(f"Dockerfile: secret-like variable baked in: {line.strip()}")
    user = re.findall(r"(?im)^USER\s+(\S+)", final)
    if not user or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user[-1]) or user[-1].startswith("0"):
        errors.append("Dockerfile: the runtime stage must end with USER <numeric non-root uid>")
    if not re.search(r"(?im)^EXPOSE\s+5153\b", final):
        errors.append("Dockerfile: EXPOSE 5153 missing")
    if not re.search(r'(?im)^ENTRYPOINT\s+\[', final):
        errors.append("Dockerfile: ENTRYPOINT must be exec form")
    if not re.search(r'(?im)^CMD\s+\["serve"\]', final):
        errors.append('Dockerfile: CMD ["serve"] missing')
    if len(stages) < 3:
        errors.append("Dockerfile: expected a multi-stage build")
    return errors


def buildspec_errors(root):
    errors = []
    spec = yaml.safe_load((root / "buildspec.yml").read_text())
    if str(spec.get("version")) != "0.2":
        errors.append("buildspec.yml: version must be 0.2")
    phases = spec.get("phases", {})
    commands = [c for p in phases.values() for c in (p or {}).get("commands", [])]
    joined = "\n".join(str(c) for c in commands)
    for var in ("AWS_ACCOUNT_ID", "AWS_DEFAULT_REGION", "IMAGE_REPO_NAME"):
        if var not in joined:
            errors.append(f"buildspec.yml: {var} is never used")
    if "ecr get-login-password" not in joined:
        errors.append("buildspec.yml: no ECR login")
    pushes = re.findall(r'docker push "\$\{IMAGE_URI\}:\$\{(\w+)\}"', joined)
    if "BUILD_TAG" not in pushes or "VERSION" not in pushes:
        errors.append("buildspec.yml: must push the semantic-version tags ${VERSION} and ${BUILD_TAG}")
    if not re.search(r"VERSION=.*Cargo\.toml", joined):
        errors.append("buildspec.yml: VERSION must come from Cargo.toml")
    if "imagedefinitions.json" not in (spec.get("artifacts") or {}).get("files", []):
        errors.append("buildspec.yml: imagedefinitions.json is not an artifact")
    cargo = (root / "Cargo.toml").read_text()
    version = re.search(r'(?m)^version = "([^"]+)"', cargo).group(1)
    if not re.fullmatch(SEMVER, version):
        errors.append(f"Cargo.toml: version {version} is not semantic")
    return errors


# --- self-test: each classic mistake, applied to a copy, must be reported ----------------------------------------

def mutate(root, path, old, new):
    p = root / path
    text = p.read_text()
    if old not in text:
        raise SystemExit(f"self-test: {old!r} not in {path}")
    p.write_text(text.replace(old, new, 1))


BREAKS = [
    ("k8s/configmap.yaml", "DB_USERNAME:", "DB_USER:", "DB_USER is not read"),
    ("k8s/configmap.yaml", 'DB_PORT: "5432"', "DB_PORT: 5432", "has a int value"),
    ("k8s/coworking-service.yaml", "app.kubernetes.io/component: api", "app.kubernetes.io/component: web",
     "matches no pod template"),
    ("k8s/coworking-deployment.yaml", "coworking-analytics:0.1.0", "coworking-analytics:latest",
     "not a semantic version"),
    ("k8s/coworking-deployment.yaml", "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 20",
     "is not longer than"),
    ("k8s/coworking-deployment.yaml", "key: DB_PASSWORD", "key: DB_PASS", "is not in secret.yaml"),
    ("k8s/coworking-service.yaml", "aws-load-balancer-scheme: internal", "aws-load-balancer-scheme: internet-facing",
     "internet-facing on EKS"),
    ("k8s/readers/readers-deployment.yaml", "              readOnly: true", "              readOnly: false",
     "without readOnly"),
    ("k8s/coworking-deployment.yaml", "value: /etc/coworking/access/keys", "value: /etc/keys",
     "is not in a mount"),
    ("Dockerfile", "ENV APP_PORT=5153", "ENV DB_PASSWORD=hunter2 APP_PORT=5153", "secret-like variable"),
    ("Dockerfile", "USER 10001:10001", "USER root", "numeric non-root uid"),
    ("buildspec.yml", 'docker push "${IMAGE_URI}:${VERSION}"', "echo no push", "semantic-version tags"),
]


def self_test(root):
    failures = 0
    for path, old, new, expect in BREAKS:
        with tempfile.TemporaryDirectory() as tmp:
            copy_root = pathlib.Path(tmp)
            for part in ("k8s", "src"):
                shutil.copytree(root / part, copy_root / part)
            for part in ("Dockerfile", "buildspec.yml", "Cargo.toml"):
                shutil.copy(root / part, copy_root / part)
            mutate(copy_root, path, old, new)
            errors = check(copy_root)
            if not any(expect in e for e in errors):
                print(f"self-test FAILED: breaking {path} ({old!r} -> {new!r}) was not reported; got {errors}")
                failures += 1
    print(f"self-test: {len(BREAKS) - failures}/{len(BREAKS)} deliberate mistakes caught")
    return failures == 0


def main():
    args = sys.argv[1:]
    if args and args[0] == "--tls-build":
        errors = tls_probe_errors(args[1])
        for e in errors:
            print(f"error: {e}")
        sys.exit(1 if errors else 0)
    if args and args[0] == "--self-test":
        sys.exit(0 if self_test(pathlib.Path(args[1])) else 1)
    root = pathlib.Path(args[0] if args else ".")
    errors = check(root)
    for e in errors:
        print(f"error: {e}")
    if errors:
        sys.exit(1)
    print("deployment files consistent: variables, selectors, ConfigMap strings, grace period, Dockerfile, buildspec")


if __name__ == "__main__":
    main()
