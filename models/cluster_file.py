"""Cluster TOML files: any cluster the `xPyD` shorthand cannot describe.

    name = "my-cluster"            # optional; default: the file's stem
    preset = "paper-hopper"        # optional node preset to start from (dualpath.models.nodes)
    prefill_nodes = 2
    decode_nodes = 4
    pe_group_gpus = 8              # optional, default 8; a group may span nodes
    de_group_gpus = 8

    [prefill]                      # optional: group sizes in vLLM or SGLang names (models/cluster_parallel.py)
    tensor_parallel_size = 1       # group = tensor_parallel_size x data_parallel_size (SGLang: tp_size)
    data_parallel_size = 16

    [node]                         # optional NodeSpec fields overriding the preset
    snic_gbps = 400.0
    dram_buffer_bytes = 320_000_000_000

Every key is checked on load: unknown keys, wrong types and bad values raise `SpecError` naming the
file, the line, the value and what was expected; unparseable TOML raises `InputError` at its line.
"""

from __future__ import annotations

from pathlib import Path

from dualpath.cluster import ClusterSpec, NodeSpec
from dualpath.errors import SpecError, UnknownNameError
from dualpath.models.cluster_parallel import ROLE_TABLES, group_sizes
from dualpath.models.nodes import DEFAULT_NODE, NODE_PRESETS
from dualpath.models.spec_table import build_spec, convert
from dualpath.tomldoc import TomlDoc

_TOP_KEYS = {
    "name": "str",
    "preset": "str",
    "prefill_nodes": "int",
    "decode_nodes": "int",
    "pe_group_gpus": "int",
    "de_group_gpus": "int",
    "node": "table",
    "prefill": "table",
    "decode": "table",
}
# File keys -> ClusterSpec fields (the file speaks of nodes; the spec counts them).
_FIELDS = {"prefill_nodes": "num_prefill_nodes", "decode_nodes": "num_decode_nodes",
           "pe_group_gpus": "pe_group_gpus", "de_group_gpus": "de_group_gpus", "name": "name"}


def load_cluster(path: str | Path) -> ClusterSpec:
    return cluster_from_doc(TomlDoc.read(path))


def cluster_from_text(text: str, source: str = "<cluster>") -> ClusterSpec:
    return cluster_from_doc(TomlDoc(source, text))


def cluster_from_doc(doc: TomlDoc) -> ClusterSpec:
    data = doc.data
    doc.check_keys(data, set(_TOP_KEYS))
    values = {key: convert(doc, (key,), data[key], kind) for key, kind in _TOP_KEYS.items()
              if key in data and kind != "table"}
    node = _node(doc, values.pop("preset", None))
    where: dict[str, tuple[str, ...]] = {}  # a group size set by a [prefill]/[decode] table: its errors point there
    for key, size in group_sizes(doc).items():
        role = next(r for r, k in ROLE_TABLES.items() if k == key)
        if values.get(key, size) != size:
            raise doc.error((key,), values[key], f"{size}, the GPUs of one [{role}] instance, or no {key}")
        values[key] = size
        where[key] = (role, next(iter(doc.table(role))))
    for key in ("prefill_nodes", "decode_nodes"):
        if key not in values:
            raise SpecError(doc.source, key, None, "a positive integer (required)")
    values.setdefault("name", Path(doc.source).stem)
    kwargs = {_FIELDS[key]: value for key, value in values.items()}
    try:
        return ClusterSpec(node=node, **kwargs)
    except SpecError as exc:
        key = next((k for k, f in _FIELDS.items() if f == exc.field), exc.field)
        if key in where:
            raise SpecError(doc.source, key, exc.value, f"{exc.expected} (set by [{where[key][0]}])",
                            doc.line_of(*where[key])) from exc
        raise doc.error((key,), exc.value, exc.expected) from exc


def _node(doc: TomlDoc, preset: str | None) -> NodeSpec:
    name = preset or DEFAULT_NODE
    if name not in NODE_PRESETS:
        valid = UnknownNameError("node preset", name, list(NODE_PRESETS)).expected
        raise doc.error(("preset",), name, valid)
    base = NODE_PRESETS[name]
    table = doc.table("node")
    if not table:
        return base
    overrides = {} if "name" in table else {"name": f"{base.name}+{Path(doc.source).stem}"}
    return build_spec(doc, ("node",), NodeSpec, table, base=base, values=overrides)
