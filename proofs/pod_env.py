"""Kubernetes pod specs (YAML or JSON, as `kubectl get -o yaml|json` writes them): each container's
`env:` as one environment, with the line every value came from.

A file may hold several documents, a `List`, a Pod or any workload whose pod template sits under
`spec.template` (Deployment, StatefulSet, DaemonSet, Job) or `spec.jobTemplate.spec.template` (CronJob).
Each container (and init container) runs with its own environment, so each one is checked on its own.
An `env` entry set through `valueFrom` is recorded as unknown: its value lives in a ConfigMap or Secret
we do not read, and a proof that depends on it must say so rather than guess.
"""

from __future__ import annotations

from pathlib import Path

from dualpath.errors import InputError, require
from dualpath.limits import MAX_NESTING_DEPTH
from dualpath.proofs.envfile import EnvSource, EnvValue
from dualpath.validate import read_text


def _mapping(node) -> dict:
    """A YAML mapping node as {key: value node}."""
    return {k.value: v for k, v in node.value} if getattr(node, "tag", "").endswith(":map") else {}


def _pod_specs(node, path: str):
    """(label, pod spec node) for every pod template in a document node."""
    top = _mapping(node)
    kind = top["kind"].value if "kind" in top else "Pod"
    name = _mapping(top["metadata"]).get("name") if "metadata" in top else None
    label = f"{kind}/{name.value}" if name is not None else kind
    if kind == "List":
        for item in top["items"].value if "items" in top else []:
            yield from _pod_specs(item, path)
        return
    spec = _mapping(top.get("spec")) if "spec" in top else {}
    if kind == "CronJob" and "jobTemplate" in spec:
        spec = _mapping(_mapping(spec["jobTemplate"]).get("spec"))
    if "template" in spec:
        yield label, _mapping(_mapping(spec["template"]).get("spec"))
    elif "containers" in spec:
        yield label, spec
    else:
        raise InputError(path, f"{label}: no pod spec (spec.containers or spec.template.spec)",
                         node.start_mark.line + 1)


def _container_env(container, label: str, path: str) -> EnvSource:
    data = _mapping(container)
    cname = data["name"].value if "name" in data else "?"
    values: dict[str, EnvValue] = {}
    for entry in data["env"].value if "env" in data else []:
        item = _mapping(entry)
        line = entry.start_mark.line + 1
        if "name" not in item:
            raise InputError(path, "env entry without a name", line)
        key = item["name"].value
        if not isinstance(key, str):  # a sequence or mapping node: not a name
            raise InputError(path, "env entry name must be a string", line)
        if "value" in item:
            values[key] = EnvValue(str(item["value"].value), path, item["value"].start_mark.line + 1)
        elif "valueFrom" in item:
            values[key] = EnvValue(None, path, line)  # from a ConfigMap/Secret: not known here
        else:
            values[key] = EnvValue("", path, line)  # an env entry with no value is the empty string
    # Kubernetes: a later duplicate name wins, as in a shell, which the dict assignment above keeps.
    return EnvSource(f"{path} {label} container {cname}", values, path)


def load_pod_envs(path: str | Path) -> list[EnvSource]:
    """One EnvSource per container of every pod template in the file."""
    yaml = require("yaml", "proofs")
    path = str(path)
    text = read_text(path)
    try:
        documents = [d for d in yaml.compose_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())  # PyYAML's messages span lines
        raise InputError(path, f"invalid YAML: {reason}", mark.line + 1 if mark else None) from exc
    except RecursionError as exc:
        raise InputError(path, f"nested more than {MAX_NESTING_DEPTH} levels deep "
                               "(dualpath.limits.MAX_NESTING_DEPTH)") from exc
    sources = []
    for document in documents:
        for label, spec in _pod_specs(document, path):
            for group in ("initContainers", "containers"):
                for container in spec[group].value if group in spec else []:
                    sources.append(_container_env(container, label, path))
    if not sources:
        raise InputError(path, "no containers found (expected a Pod, a workload with a pod template, or a List)")
    return sources
