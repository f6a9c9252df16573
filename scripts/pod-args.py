#!/usr/bin/env python3
"""Prints a container's arguments from rendered manifests as the kubelet would start it (docs/deploy.md, "Checks").

    pod-args.py RENDERED.yaml KIND/NAME CONTAINER [FIELD=VALUE ...] [--env NAME=VALUE ...]

FIELD=VALUE are the downward API's fields of the pod (spec.nodeName=gpu-7, status.podIP=10.1.2.3, metadata.name=...).
--env NAME=VALUE replaces a variable after the pod's own are set (an existing etcd's address, say). Variables come
from the container's envFrom ConfigMaps (found in the same file), then its env (values and fieldRefs) in order; each
$(NAME) in the arguments is expanded as Kubernetes expands it: $$ is a literal $, and a name not defined stays as
written. Prints one JSON object: {"command": [...], "args": [...], "env": {...}}. Needs PyYAML.
"""
import json
import re
import sys

import yaml


def expand(text, env):
    def one(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    path, target, container_name = argv[0], argv[1], argv[2]
    fields, overrides = {}, {}
    rest = argv[3:]
    while rest:
        item = rest.pop(0)
        if item == "--env":
            name, _, value = rest.pop(0).partition("=")
            overrides[name] = value
        else:
            field, _, value = item.partition("=")
            fields[field] = value
    kind, _, name = target.partition("/")
    with open(path) as file:
        objects = [o for o in yaml.safe_load_all(file) if o]
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    workload = next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)
    if workload is None:
        sys.exit(f"no {kind} {name} in {path}")
    pod = workload["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == container_name), None)
    if container is None:
        sys.exit(f"no container {container_name} in {kind} {name}")
    env = {}
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef")
        if reference is None:
            continue
        if reference["name"] not in config_maps:
            sys.exit(f"ConfigMap {reference['name']} (envFrom) is not in {path}")
        env.update(config_maps[reference["name"]])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
        elif "fieldRef" in variable.get("valueFrom", {}):
            field = variable["valueFrom"]["fieldRef"]["fieldPath"]
            if field not in fields:
                sys.exit(f"{variable['name']} comes from the pod's {field}: give it as {field}=VALUE")
            env[variable["name"]] = fields[field]
        elif "configMapKeyRef" in variable.get("valueFrom", {}):
            reference = variable["valueFrom"]["configMapKeyRef"]
            env[variable["name"]] = config_maps.get(reference["name"], {}).get(reference["key"], "")
    env.update(overrides)
    print(json.dumps({
        "command": [expand(a, env) for a in container.get("command", [])],
        "args": [expand(a, env) for a in container.get("args", [])],
        "env": env,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
