"""Traffic plan (TOML): the traffic classes with their SL and intended VL, the fabric's QoS targets,
the per-library SL settings that must agree, and optionally the node numbers for the P:D range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualpath.errors import SpecError
from dualpath.proofs.envfile import EnvValue, load_env
from dualpath.proofs.opensm import Where
from dualpath.tomldoc import TomlDoc

KINDS = ("collective", "kv", "management")
MTUS = (256, 512, 1024, 2048, 4096)
# Library -> the setting that picks its SL; unset, every one of them uses SL 0.
KNOWN_SETTINGS = {
    "nccl": "NCCL_IB_SL",
    "ucx": "UCX_IB_SL",
    "mooncake": "MC_IB_SL",
    "deepep": "NVSHMEM_IB_SL",  # DeepEP's RDMA traffic is NVSHMEM's
    "threefs": "ibsocket.sl",  # 3FS IBSocket config item `sl`
}
LIBRARY_DEFAULT_SL = 0


@dataclass(frozen=True)
class TrafficClass:
    name: str
    kind: str
    sl: int
    vl: int
    where: Where


@dataclass(frozen=True)
class LibrarySetting:
    """One library's SL knob: the value the plan records and/or the value the env file sets."""

    name: str
    setting: str
    carries: tuple[str, ...]
    plan_value: int | None
    plan_where: Where
    env_value: int | None = None
    env_where: EnvValue | None = None


@dataclass(frozen=True)
class FabricTargets:
    mtu_bytes: int
    link_gbps: float
    collective_share_min: float
    kv_share_min: float
    model_wait_max_ns: float
    where: dict  # field -> Where


@dataclass(frozen=True)
class ClusterNumbers:
    gpus_per_node: int
    cnic_gbps: float
    snic_gbps: float
    host_mem_gb_per_s: float
    prefill_nodes: int
    decode_nodes: int
    where: Where


@dataclass(frozen=True)
class TrafficPlan:
    path: str
    classes: tuple[TrafficClass, ...]
    fabric: FabricTargets
    libraries: tuple[LibrarySetting, ...]
    cluster: ClusterNumbers | None
    env_path: str | None

    def of_kind(self, kind: str) -> list[TrafficClass]:
        return [c for c in self.classes if c.kind == kind]


def _where(doc: TomlDoc, *path) -> Where:
    return Where(doc.source, doc.line_of(*path), ".".join(str(p) for p in path))


def _fabric(doc: TomlDoc) -> FabricTargets:
    data = doc.table("fabric", required=True)
    keys = ("mtu_bytes", "link_gbps", "collective_share_min", "kv_share_min", "model_wait_max_ns")
    doc.check_keys(data, set(keys), ("fabric",))
    mtu = data.get("mtu_bytes", 4096)
    if mtu not in MTUS or isinstance(mtu, bool):
        raise doc.error(("fabric", "mtu_bytes"), mtu, "an IB MTU: " + ", ".join(map(str, MTUS)))
    p = ("fabric",)
    return FabricTargets(
        mtu, doc.number(data, "link_gbps", p, 0, 1e6, low_open=True),
        doc.number(data, "collective_share_min", p, 0, 1, low_open=True),
        doc.number(data, "kv_share_min", p, 0, 1, low_open=True),
        doc.number(data, "model_wait_max_ns", p, 0, 1e12, low_open=True),
        {k: _where(doc, "fabric", k) for k in keys},
    )


def _classes(doc: TomlDoc) -> tuple[TrafficClass, ...]:
    table = doc.table("classes", required=True)
    classes = []
    for name, data in table.items():
        path = ("classes", name)
        if not isinstance(data, dict):
            raise doc.error(path, data, "a table with kind, sl and vl")
        doc.check_keys(data, {"kind", "sl", "vl", "description"}, path)
        for key in ("kind", "sl", "vl"):
            if key not in data:
                raise doc.error((*path, key), None, f"a {key} for class {name}")
        kind = doc.string(data, "kind", path, KINDS)
        sl = doc.integer(data, "sl", path, 0, 15)
        vl = doc.integer(data, "vl", path, 0, 14)
        classes.append(TrafficClass(name, kind, sl, vl, _where(doc, *path)))
    if not classes:
        raise doc.error(("classes",), {}, "at least one traffic class")
    return tuple(classes)


def _libraries(doc: TomlDoc, classes: tuple[TrafficClass, ...], env: dict[str, EnvValue]) -> tuple:
    names = {c.name for c in classes}
    libraries = []
    for name, data in doc.table("libraries").items():
        path = ("libraries", name)
        if not isinstance(data, dict):
            raise doc.error(path, data, "a table with setting, carries and optionally value")
        doc.check_keys(data, {"setting", "carries", "value"}, path)
        setting = doc.string(data, "setting", path, default=KNOWN_SETTINGS.get(name))
        carries = data.get("carries")
        if not isinstance(carries, list) or not carries or any(c not in names for c in carries):
            raise doc.error((*path, "carries"), carries, "a list of class names from [classes]: "
                            + ", ".join(sorted(names)))
        value = doc.integer(data, "value", path, 0, 15) if "value" in data else None
        env_value = env_where = None
        if setting in env:
            env_where = env[setting]
            text = env_where.value
            if not text.isdigit() or not 0 <= int(text) <= 15:
                raise SpecError(env_where.file, setting, text, "an SL in 0..15", env_where.line)
            env_value = int(text)
        libraries.append(LibrarySetting(name, setting, tuple(carries), value, _where(doc, *path, "value")
                                        if value is not None else _where(doc, *path), env_value, env_where))
    return tuple(libraries)


def _cluster(doc: TomlDoc) -> ClusterNumbers | None:
    data = doc.table("cluster")
    if not data:
        return None
    p = ("cluster",)
    keys = ("gpus_per_node", "cnic_gbps", "snic_gbps", "host_mem_gb_per_s", "prefill_nodes", "decode_nodes")
    doc.check_keys(data, set(keys), p)
    return ClusterNumbers(
        doc.integer(data, "gpus_per_node", p, 1, 1024), doc.number(data, "cnic_gbps", p, 0, 1e6, low_open=True),
        doc.number(data, "snic_gbps", p, 0, 1e6, low_open=True),
        doc.number(data, "host_mem_gb_per_s", p, 0, 1e6, low_open=True),
        doc.integer(data, "prefill_nodes", p, 1, 100_000), doc.integer(data, "decode_nodes", p, 1, 100_000),
        _where(doc, "cluster"),
    )


def load_traffic(path: str | Path) -> TrafficPlan:
    doc = TomlDoc.read(path)
    doc.check_keys(doc.data, {"env_file", "fabric", "classes", "libraries", "cluster"})
    env_path = None
    env: dict[str, EnvValue] = {}
    if "env_file" in doc.data:
        name = doc.string(doc.data, "env_file", ())
        env_path = str(Path(doc.source).parent / name)
        env = load_env(env_path)
    classes = _classes(doc)
    return TrafficPlan(doc.source, classes, _fabric(doc), _libraries(doc, classes, env), _cluster(doc), env_path)
