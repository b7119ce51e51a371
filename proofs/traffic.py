"""Traffic plan (TOML): the traffic classes with their SL and intended VL, the fabric's QoS targets,
the per-library SL (InfiniBand) and traffic-class (RoCE) settings that must agree, where the processes'
environments come from (`env_file`, `pod_specs`), and optionally the node numbers for the P:D range.

A library may instead take its SL from the subnet manager: `path_query = {service_id, pkey, qos_class,
source, destination}` says it resolves paths through the SA, so OpenSM's QoS policy picks its SL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualpath.proofs.envfile import EnvSource, EnvValue, env_source
from dualpath.proofs.opensm import Where
from dualpath.tomldoc import TomlDoc
from dualpath.validate import ascii_integer

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
# Library -> the setting that picks the IB traffic class byte (RoCE: DSCP << 2 | ECN); unset means 0.
KNOWN_TC_SETTINGS = {
    "nccl": "NCCL_IB_TC",
    "ucx": "UCX_IB_TRAFFIC_CLASS",
    "mooncake": "MC_IB_TC",
    "deepep": "NVSHMEM_IB_TRAFFIC_CLASS",
    "threefs": "ibsocket.traffic_class",
}
LIBRARY_DEFAULT_TC = 0
PATH_QUERY_KEYS = ("service_id", "pkey", "qos_class", "source", "destination")
PATH_QUERY_BITS = {"service_id": 64, "pkey": 16, "qos_class": 12}  # their widths in an IB PathRecord


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
    tc_setting: str | None = None
    tc_value: int | None = None  # the plan's traffic-class byte, for knobs not set by environment
    path_query: dict | None = None  # field -> int or str: the SA path query, when the library makes one


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
    envs: tuple[EnvSource, ...] = ()

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
        doc.string(data, "description", path, default="")  # unused, but a number there is a mistake
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
        doc.check_keys(data, {"setting", "carries", "value", "tc_setting", "tc_value", "path_query"}, path)
        setting = doc.string(data, "setting", path, default=KNOWN_SETTINGS.get(name))
        tc_setting = doc.string(data, "tc_setting", path, default=KNOWN_TC_SETTINGS.get(name)) \
            if "tc_setting" in data or name in KNOWN_TC_SETTINGS else None
        tc_value = doc.integer(data, "tc_value", path, 0, 255) if "tc_value" in data else None
        carries = data.get("carries")
        if (not isinstance(carries, list) or not carries
                or any(not isinstance(c, str) or c not in names for c in carries)):
            raise doc.error((*path, "carries"), carries, "a list of class names from [classes]: "
                            + ", ".join(sorted(names)))
        value = doc.integer(data, "value", path, 0, 15) if "value" in data else None
        query = _path_query(doc, data, path) if "path_query" in data else None
        env_value = env_where = None
        if setting in env:
            env_where = env[setting]
            env_value = env_int(env_where, setting, 15)
        libraries.append(LibrarySetting(name, setting, tuple(carries), value, _where(doc, *path, "value")
                                        if value is not None else _where(doc, *path), env_value, env_where,
                                        tc_setting, tc_value, query))
    return tuple(libraries)


def env_int(entry: EnvValue, setting: str, high: int) -> int | None:
    """An SL (high 15) or traffic-class byte (high 255) from an environment; None when not knowable here."""
    text = entry.value
    if text is None:
        return None
    if text == "auto" and high == 255:
        return LIBRARY_DEFAULT_TC  # UCX_IB_TRAFFIC_CLASS=auto: UCX's own default, taken as 0 here
    return ascii_integer(entry.file, setting, text, 0, high, entry.line)


def _path_query(doc: TomlDoc, data: dict, path: tuple) -> dict:
    query = data["path_query"]
    p = (*path, "path_query")
    if not isinstance(query, dict):
        raise doc.error(p, query, "an inline table with " + ", ".join(PATH_QUERY_KEYS))
    doc.check_keys(query, set(PATH_QUERY_KEYS), p)
    out: dict = {}
    for key, value in query.items():
        if key in PATH_QUERY_BITS:
            high = (1 << PATH_QUERY_BITS[key]) - 1
            try:
                if isinstance(value, bool) or not isinstance(value, (int, str)) or (
                        isinstance(value, str) and (not value.isascii() or len(value) > 24)):
                    raise ValueError(value)  # int() reads other scripts' digits; a long one is no id
                number = value if isinstance(value, int) else int(value, 0)
                if not 0 <= number <= high:
                    raise ValueError(value)
            except ValueError:
                raise doc.error((*p, key), value, f"an integer in 0..{high:#x} (decimal or 0x hex)") from None
            out[key] = number
        elif isinstance(value, str) and value:
            out[key] = value  # a port GUID (0x...) or port name "node description/P<n>"
        else:
            raise doc.error((*p, key), value, "a port GUID or port name")
    return out


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
    doc.check_keys(doc.data, {"env_file", "pod_specs", "fabric", "classes", "libraries", "cluster"})
    folder = Path(doc.source).parent
    envs = [env_source(folder / name) for name in _names(doc, "env_file")]
    if "pod_specs" in doc.data:
        from dualpath.proofs.pod_env import load_pod_envs

        envs += [s for name in _names(doc, "pod_specs") for s in load_pod_envs(folder / name)]
    env_path = envs[0].file if envs else None
    env = envs[0].values if envs else {}
    classes = _classes(doc)
    plan = TrafficPlan(doc.source, classes, _fabric(doc), _libraries(doc, classes, env), _cluster(doc), env_path,
                       tuple(envs))
    for source in envs:  # parse every source now, so a bad value is an input error before any proof
        _check_values(plan, source)
    return plan


def _names(doc: TomlDoc, key: str) -> list[str]:
    value = doc.data.get(key, [])
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise doc.error((key,), value, "a file name or a list of file names (relative to the plan)")
    return names


def _check_values(plan: TrafficPlan, source: EnvSource) -> None:
    for lib in plan.libraries:
        if lib.setting in source.values:
            env_int(source.values[lib.setting], lib.setting, 15)
        if lib.tc_setting and lib.tc_setting in source.values:
            env_int(source.values[lib.tc_setting], lib.tc_setting, 255)


def with_sources(plan: TrafficPlan, env_paths=(), pod_paths=()) -> TrafficPlan:
    """`--env`/`--pod` files replace the plan's env_file/pod_specs: the processes that really run."""
    if not env_paths and not pod_paths:
        return plan
    sources: list[EnvSource] = [env_source(p) for p in env_paths]
    if pod_paths:
        from dualpath.proofs.pod_env import load_pod_envs

        sources += [s for p in pod_paths for s in load_pod_envs(p)]
    return with_envs(plan, sources)


def with_envs(plan: TrafficPlan, sources: list[EnvSource]) -> TrafficPlan:
    """The plan with its environments replaced (`dualpath verify --env/--pod`); values are checked here."""
    from dataclasses import replace

    first = sources[0].values if sources else {}
    libraries = tuple(replace(lib, env_where=first.get(lib.setting),
                              env_value=env_int(first[lib.setting], lib.setting, 15) if lib.setting in first else None)
                      for lib in plan.libraries)
    out = replace(plan, libraries=libraries, envs=tuple(sources), env_path=sources[0].file if sources else None)
    for source in sources:
        _check_values(out, source)
    return out
