"""Generated bad inputs through the installed `dualpath` command, one subprocess each, and the outcome table.

    python benchmarks/fuzz_cli.py                      # 2,400 cases, 2 workers, seed 0
    python benchmarks/fuzz_cli.py --only plan-json --count 200 --json fuzz.json

Every file format the commands read (cluster/model/traffic/RoCE/overrides TOML, HF config.json,
profile CSV, plan JSON, dualpath and Mooncake JSONL, opensm.conf, QoS policy, mlnx_qos, SONiC
config_db.json, pod YAML, env files, secret files) gets whole-file damage (empty, garbage,
truncated, non-UTF-8, UTF-16, NUL bytes, a directory, a FIFO, a link to /dev/zero, a 2 MB line,
50,000-deep nesting) and per-field values (strings, negatives, 0, NaN, ±inf, 1e308, 2^63-1,
booleans, arrays, tables, unicode digits, a 5,000-digit integer, missing, duplicated and unknown
keys); every numeric and path flag gets the same. Each case runs under a timeout and an address-space
cap (RLIMIT_AS). Outcomes: rejected with one line (exit 2), accepted, and the failures: traceback,
hang, memory blow-up, crash (signal), multi-line error, a one-line error not naming the input, and
must-reject-but-accepted (a case marked MUST-REJECT, e.g. a NaN bandwidth, that got through).
Deterministic: the cases depend only on --seed. Exit 1 when any failure was seen.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROOF_SET = ROOT / "proofs" / "examples" / "broken-sonic-pfc"
ENV_FILE = ROOT / "proofs" / "examples" / "broken-roce-strict-kv" / "paper.env"

OUTCOMES = ("rejected", "accepted", "traceback", "hang", "memory", "crash", "multi-line", "unnamed",
            "must-reject-accepted")
FAILURES = OUTCOMES[2:]

# Special file kinds written in place of a file's bytes.
DIRECTORY, FIFO, DEVZERO = "<directory>", "<fifo>", "</dev/zero>"


@dataclass
class Case:
    family: str  # the format or command
    label: str  # what was done, e.g. "field fabric.link_gbps = nan"
    argv: list[str]
    files: dict[str, bytes | str] = field(default_factory=dict)
    must_reject: bool = False
    named: str = ""  # a rejection must name this (the file or the flag)
    # A deliberate later failure (a missing file, no secret): an error naming it means the input got through.
    sentinel: str = ""


# ----- values -----------------------------------------------------------------------------------------

NAN, INF = math.nan, math.inf
BIG_INT = 2**63 - 1


class Raw:
    """Text put into a document verbatim (a 5,000-digit integer, a unicode-digit number)."""

    def __init__(self, text: str):
        self.text = text


BAD_VALUES: list[tuple[str, object]] = [
    ("string", "abc"), ("empty string", ""), ("negative", -1), ("negative float", -0.5), ("zero", 0),
    ("nan", NAN), ("inf", INF), ("-inf", -INF), ("1e308", 1e308), ("2^63-1", BIG_INT), ("true", True),
    ("false", False), ("array", [1, 2]), ("table", {"x": 1}), ("unicode digits", "²٣"),
    ("5000 digits", Raw("9" * 5000)), ("2 MB string", "a" * (2 << 20)),
]
# 2^63-1 is absurd for a count but a fine 64-bit id or hash (Mooncake hash_ids, IB service ids): not here.
NON_FINITE = {"nan", "inf", "-inf", "1e308", "5000 digits"}
WRONG_TYPE_FOR_NUMBER = {"string", "empty string", "true", "false", "array", "table", "unicode digits", "2 MB string"}


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def must_reject_value(base: object, label: str, strict_strings: bool) -> bool:
    """A replacement no reader may accept: a non-number or absurd number where a number was, or a
    non-string where a string was (formats whose fields are all typed)."""
    if is_number(base):
        return label in NON_FINITE or label in WRONG_TYPE_FOR_NUMBER
    if strict_strings and isinstance(base, str):
        return label not in {"string", "empty string", "unicode digits", "2 MB string"}
    return False


# ----- documents: TOML and JSON writers and per-field edits -----------------------------------------------

def toml_value(value: object) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_text(doc: dict, prefix: str = "") -> str:
    """TOML for `doc`: scalars and inline values first, then [tables] and [[arrays of tables]]."""
    lines, tables = [], []
    for key, value in doc.items():
        qkey = json.dumps(key)
        if isinstance(value, dict) and not (False):
            tables.append((f"{prefix}{qkey}", value, False))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.extend((f"{prefix}{qkey}", v, True) for v in value)
        else:
            lines.append(f"{qkey} = {toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table, array in tables:
        out += f"\n[[{name}]]\n" if array else f"\n[{name}]\n"
        out += toml_text(table, prefix=f"{name}.") if not array else _array_table(table, name)
    return out


def _array_table(table: dict, name: str) -> str:
    inline = {k: v for k, v in table.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    out = "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in inline.items())
    for key, value in nested.items():
        out += f"{json.dumps(key)} = {toml_value(value)}\n"
    return out


def json_text(doc: object) -> str:
    text = json.dumps(doc, indent=1, default=lambda v: f"@@RAW{id(v)}@@")
    for raw in _raws(doc):
        text = text.replace(f'"@@RAW{id(raw)}@@"', raw.text)
    return text + "\n"


def _raws(doc: object) -> Iterator[Raw]:
    if isinstance(doc, Raw):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _raws(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _raws(v)


def leaves(doc: object, path: tuple = ()) -> Iterator[tuple[tuple, object]]:
    """(path, value) of every scalar, every scalar list and each of its elements in `doc`."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        nested = isinstance(value, (dict, list)) and any(isinstance(v, (dict, list)) for v in
                                                         (value.values() if isinstance(value, dict) else value))
        if nested or (isinstance(value, dict) and value):
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key), value
            if isinstance(value, list):
                yield from (((*path, key, i), v) for i, v in enumerate(value))


def _parent(doc: object, path: tuple) -> object:
    for key in path[:-1]:
        doc = doc[key]  # type: ignore[index]
    return doc


def field_edits(doc: dict, rng: random.Random, count: int, strict_strings: bool, unknown_must_reject: bool,
                free: tuple[str, ...] = (), either: tuple[str, ...] = ()) -> Iterator[tuple[str, dict, bool]]:
    """`count` edited copies of `doc`: (label, document, must_reject); fields under `free` are never
    must-reject (free-form, e.g. a plan's `meta`)."""
    paths = [p for p, _ in leaves(doc)]
    for _ in range(count):
        path = rng.choice(paths)
        edited = copy.deepcopy(doc)
        parent = _parent(edited, path)
        base = parent[path[-1]]  # type: ignore[index]
        where = ".".join(str(p) for p in path)
        roll = rng.random()
        if roll < 0.08 and isinstance(parent, dict):
            del parent[path[-1]]
            yield f"missing {where}", edited, False
        elif roll < 0.16 and isinstance(parent, dict):
            parent["colour_" + str(rng.randrange(100))] = 1
            yield f"unknown key beside {where}", edited, unknown_must_reject
        else:
            label, value = rng.choice(BAD_VALUES)
            parent[path[-1]] = copy.deepcopy(value)  # type: ignore[index]
            must = (must_reject_value(base, label, strict_strings and path[-1] not in either)
                    and str(path[0]) not in free)
            yield f"{where} = {label}", edited, must


# ----- whole-file damage -------------------------------------------------------------------------------

def whole_file(base: bytes, rng: random.Random, kind: str) -> Iterator[tuple[str, bytes | str, bool]]:
    """Damage to any file: (label, content or special kind, must_reject)."""
    structured = kind in ("toml", "json", "jsonl", "yaml", "csv")
    nest = {"toml": b"a = " + b"[" * 50_000, "json": b"[" * 50_000 + b"]" * 50_000,
            "jsonl": b"[" * 50_000 + b"\n", "yaml": b"a: " + b"[" * 50_000}.get(kind, b"[" * 50_000 + b"\n")
    yield "empty", b"", kind == "json"
    yield "garbage", bytes(rng.randrange(128, 256) for _ in range(200)), True
    cut = rng.randrange(1, max(2, len(base)))
    yield f"truncated at {cut}", base[:cut], False
    yield "non-UTF-8", base[: len(base) // 2] + b"\xff\xfe\xc3(" + base[len(base) // 2:], True
    yield "UTF-16", base.decode("utf-8").encode("utf-16"), True
    yield "NUL bytes", base[: len(base) // 3] + b"\x00\x00" + base[len(base) // 3:], structured
    yield "directory", DIRECTORY, True
    yield "FIFO", FIFO, True
    yield "link to /dev/zero", DEVZERO, True
    yield "2 MB line", base + b"\n" + b"a" * (2 << 20) + b"\n", False
    yield "50k-deep nesting", nest, structured


def line_edits(text: str, rng: random.Random, count: int, numeric_must_reject: bool) -> Iterator[tuple[str, str, bool]]:
    """Edits of a line-oriented file: a number replaced, a line dropped, doubled or added."""
    lines = text.splitlines()
    numbered = [i for i, line in enumerate(lines)
                if any(c.isdigit() for c in line) and not line.lstrip().startswith("#")]
    bad_numbers = [("nan", "nan", True), ("inf", "inf", True), ("-1", "-1", False), ("1e308", "1e308", True),
                   ("2^63-1", str(BIG_INT), True), ("unicode digits", "²٣", True), ("5000 digits", "9" * 5000, True),
                   ("string", "abc", True), ("empty", "", True), ("0", "0", False)]
    for _ in range(count):
        edited = list(lines)
        roll = rng.random()
        if roll < 0.6 and numbered:
            i = rng.choice(numbered)
            label, value, must = rng.choice(bad_numbers)
            words = edited[i].replace(",", " , ").replace("=", " = ").replace(":", " : ").split(" ")
            digits = [j for j, w in enumerate(words) if any(c.isdigit() for c in w)]
            words[rng.choice(digits)] = value
            edited[i] = " ".join(words).replace(" , ", ",").replace(" = ", "=").replace(" : ", ":")
            yield f"line {i + 1} number = {label}", "\n".join(edited) + "\n", must and numeric_must_reject
        elif roll < 0.7 and lines:
            i = rng.randrange(len(lines))
            del edited[i]
            yield f"line {i + 1} dropped", "\n".join(edited) + "\n", False
        elif roll < 0.8 and lines:
            i = rng.randrange(len(lines))
            edited.insert(i, edited[i])
            yield f"line {i + 1} doubled", "\n".join(edited) + "\n", False
        else:
            i = rng.randrange(len(lines) + 1)
            edited.insert(i, rng.choice(["x", "= 3", "KEY", "colour 7", "a=b=c", "\t", "[", "::"]))
            yield f"line {i + 1} added", "\n".join(edited) + "\n", False


# ----- formats -----------------------------------------------------------------------------------------

@dataclass
class Format:
    family: str
    target: str  # the file name the damaged content goes to
    base: bytes
    argv: list[str]
    kind: str  # toml, json, jsonl, yaml, csv, text
    others: dict[str, bytes] = field(default_factory=dict)  # files the command also reads, intact
    strict_strings: bool = False
    unknown_must_reject: bool = False
    numeric_lines_must_reject: bool = False
    fields_must_reject: bool = True  # False where the reader ignores most fields (HF config, SONiC)
    free: tuple[str, ...] = ()  # free-form top-level fields
    either: tuple[str, ...] = ()  # fields that take a number or a string (a 64-bit id as 0x... or an int)
    count: int | None = None  # cases of this format (default: --per-format)
    sentinel: str = ""  # an error naming this means the input got through (see Case.sentinel)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _proof_set() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in PROOF_SET.iterdir() if p.is_file()}


VERIFY = ["verify", "--opensm", "opensm.conf", "--traffic", "traffic.toml", "--roce", "roce.toml",
          "--qos-policy", "qos-policy.conf", "--mlnx-qos", "nic.mlnx_qos", "--sonic", "config_db.json",
          "--pod", "pods.yaml", "--quiet"]
OVERRIDES = b"""[[port]]
node = "leaf-01"
ports = "1-4,7"
vl_cap = 2
sl2vl = "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"

[[port]]
node = "spine-01"
ports = [1, 2]
type = "swe"
vlarb_low_cap = 2
high_limit = 200
"""
TRACE = b"""{"dualpath_workload":1,"name":"two","block_tokens":64}
{"agent":0,"start_s":0.0,"turns":[[4062,236],[125,73]]}
{"agent":1,"start_s":0.5,"turns":[[2000,100]]}
"""
PLAN_TRACE = b"""{"dualpath_workload":1,"name":"one-turn","block_tokens":64}
{"agent":0,"start_s":0.0,"turns":[[4062,236]]}
{"agent":1,"start_s":0.0,"turns":[[2000,100]]}
"""  # one turn per agent: a batch of 2 is the whole trace, so its plan replays it
PROFILE_MODEL = b'preset = "ds-27b"\nname = "ds-27b-profiled"\nprofile = "profile.csv"\n'
PROFILE = b"cached_tokens,new_tokens,seconds\n0,512,0.061\n16384,512,0.094\n32768,1024,0.21\n"
SECRET = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
# An engine that gets past its flags and secret stops at its model file (missing): it never serves.
ENGINE = ["engine", "--role", "prefill", "--name", "PE0", "--store", "store", "--model", "missing-model.json"]


def formats(plan_json: bytes) -> list[Format]:
    proofs = _proof_set()
    mooncake = b"".join((ROOT / "examples" / "traces" / "agentic_sessions.jsonl").read_bytes().splitlines(True)[:6])
    out = [
        Format("cluster-toml", "cluster.toml", _read(ROOT / "examples" / "clusters" / "paper-2p4d.toml"),
               ["info", "--cluster", "cluster.toml"], "toml", strict_strings=True, unknown_must_reject=True),
        Format("model-toml", "model.toml", _read(ROOT / "examples" / "models" / "qwen2.5-72b.toml"),
               ["info", "--model", "model.toml"], "toml", strict_strings=True, unknown_must_reject=True),
        Format("model-toml-sim", "model.toml", _read(ROOT / "examples" / "models" / "ds-27b-h20.toml"),
               ["simulate", "--cluster", "1P1D", "--agents", "1", "--policy", "dualpath", "--model", "model.toml"],
               "toml", strict_strings=True, unknown_must_reject=True),
        Format("hf-config", "config.json", _read(ROOT / "examples" / "models" / "hf" / "llama-3.1-8b" / "config.json"),
               ["info", "--model", "config.json"], "json", fields_must_reject=False),
        Format("profile-csv", "profile.csv", PROFILE, ["info", "--model", "model.toml"], "csv",
               others={"model.toml": PROFILE_MODEL}, numeric_lines_must_reject=True),
        Format("plan-json", "plan.json", plan_json,
               ["simulate", "--workload", "trace.jsonl", "--plan", "plan.json", "--policy", "dualpath"], "json",
               others={"trace.jsonl": PLAN_TRACE}, strict_strings=True, free=("meta",)),
        Format("trace-jsonl", "trace.jsonl", TRACE, ["workload", "--workload", "trace.jsonl", "--stats"], "jsonl"),
        Format("trace-sim", "trace.jsonl", TRACE,
               ["simulate", "--workload", "trace.jsonl", "--policy", "dualpath"], "jsonl"),
        Format("mooncake-jsonl", "trace.jsonl", mooncake,
               ["workload", "--workload", "mooncake:trace.jsonl", "--stats"], "jsonl"),
        Format("traffic-toml", "traffic.toml", proofs["traffic.toml"], VERIFY, "toml", others=proofs,
               strict_strings=True, unknown_must_reject=True, either=("service_id", "pkey", "qos_class")),
        Format("roce-toml", "roce.toml", proofs["roce.toml"], VERIFY, "toml", others=proofs,
               strict_strings=True, unknown_must_reject=True),
        Format("overrides-toml", "overrides.toml", OVERRIDES, [*VERIFY, "--overrides", "overrides.toml"], "toml",
               others=proofs, unknown_must_reject=True),
        Format("opensm-conf", "opensm.conf", proofs["opensm.conf"], VERIFY, "text", others=proofs),
        Format("qos-policy", "qos-policy.conf", proofs["qos-policy.conf"], VERIFY, "text", others=proofs),
        Format("mlnx-qos", "nic.mlnx_qos", proofs["nic.mlnx_qos"], VERIFY, "text", others=proofs),
        Format("sonic-json", "config_db.json", proofs["config_db.json"], VERIFY, "json", others=proofs,
               fields_must_reject=False),
        Format("pod-yaml", "pods.yaml", proofs["pods.yaml"], VERIFY, "yaml", others=proofs,
               fields_must_reject=False),  # only the containers' env is read
        Format("env-file", "paper.env", _read(ENV_FILE), [*VERIFY, "--env", "paper.env"], "text", others=proofs),
        Format("secret-file", "secret", SECRET, [*ENGINE, "--secret-file", "secret"], "text", count=30,
               sentinel="missing-model.json"),
    ]
    return out


def _yaml_docs(text: bytes) -> list | None:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return None
    return list(yaml.safe_load_all(text))


def yaml_text(docs: list) -> bytes:
    """YAML documents, with `Raw` values (a 5,000-digit integer) written verbatim."""
    import yaml

    plain = json.loads(json_text(docs).replace("9" * 5000, '"RAW-DIGITS"'), parse_constant=float)
    return yaml.safe_dump_all(plain, allow_unicode=True).replace("RAW-DIGITS", "9" * 5000).encode()


def format_cases(fmt: Format, rng: random.Random, count: int) -> list[Case]:
    def case(label: str, content: bytes | str, must: bool) -> Case:
        return Case(fmt.family, label, list(fmt.argv), {**fmt.others, fmt.target: content}, must, fmt.target,
                    fmt.sentinel)

    cases = [case(label, content, must) for label, content, must in whole_file(fmt.base, rng, fmt.kind)]
    left = max(0, (fmt.count or count) - len(cases))
    field_must = fmt.fields_must_reject
    text = fmt.base.decode()
    if fmt.kind == "toml":
        doc = tomllib.loads(text)
        for label, edited, must in field_edits(doc, rng, left - left // 8, fmt.strict_strings,
                                               fmt.unknown_must_reject, fmt.free, fmt.either):
            cases.append(case(label, toml_text(edited).encode(), must and field_must))
        lines = [line for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")]
        for _ in range(left // 8):  # a key given twice is not TOML
            line = rng.choice(lines)
            cases.append(case(f"duplicated key {line.split('=')[0].strip()}", text.replace(line, f"{line}\n{line}", 1)
                              .encode(), True))
    elif fmt.kind == "json":
        doc = json.loads(text)
        for label, edited, must in field_edits(doc, rng, left, fmt.strict_strings, fmt.unknown_must_reject,
                                               fmt.free):
            cases.append(case(label, json_text(edited).encode(), must and field_must))
    elif fmt.kind == "jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        for _ in range(left):
            i = rng.randrange(len(records))
            if rng.random() < 0.15:
                edited_lines = [json.dumps(r) for j, r in enumerate(records) if j != i]
                cases.append(case(f"record {i + 1} dropped", ("\n".join(edited_lines) + "\n").encode(), False))
                continue
            (label, edited, must), = field_edits(records[i], rng, 1, False, False)
            out = [json_text(edited).replace("\n", "") if j == i else json.dumps(r) for j, r in enumerate(records)]
            cases.append(case(f"record {i + 1}: {label}", ("\n".join(out) + "\n").encode(), must and field_must))
    elif fmt.kind == "yaml" and (docs := _yaml_docs(fmt.base)) is not None:

        for _ in range(left):
            i = rng.randrange(len(docs))
            (label, edited, _must), = field_edits(docs[i], rng, 1, False, False)
            body = yaml_text([edited if j == i else d for j, d in enumerate(docs)])
            cases.append(case(f"document {i + 1}: {label}", body, False))
    else:
        for label, edited_text, must in line_edits(text, rng, left, fmt.numeric_lines_must_reject):
            cases.append(case(label, edited_text.encode(), must))
    return cases


# ----- flags -------------------------------------------------------------------------------------------

FLAG_VALUES = ["abc", "-1", "0", "nan", "inf", "-inf", "1e308", str(BIG_INT), "1000000000000", "²", "١٢", "",
               "3", "0.5", "1_000", "9" * 5000]


def _int_in(low: int, high: int) -> Callable[[str], bool]:
    def ok(text: str) -> bool:
        return text.isascii() and len(text) < 30 and text.lstrip("-").isdigit() and low <= int(text) <= high
    return ok


def _float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], bool]:
    def ok(text: str) -> bool:
        try:
            value = float(text) if text.isascii() and "_" not in text else NAN
        except ValueError:
            return False
        return math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
    return ok


# (command prefix, flag, validity; a flag that passes may still be refused by the command's later checks)
SIM = ["simulate", "--agents", "1", "--policy", "dualpath"]
PLAN = ["plan", "--batch", "2", "--solver", "greedy"]
# `run` and `serve` cases stop after their flags (a missing cluster file, no API key): no engine or server starts.
RUN = ["run", "--cluster", "missing-cluster.toml", "--in-process"]
SERVE = ["serve"]
SENTINELS = {"run": "missing-cluster.toml", "engine": "DUALPATH_SECRET", "serve": "api_key"}
FLAGS: list[tuple[list[str], str, Callable[[str], bool]]] = [
    (["workload"], "--agents", _int_in(1, 100_000)), (["workload", "--agents", "2"], "--seed", _int_in(0, 2**32 - 1)),
    (["workload", "--agents", "2"], "--aps", _float_in(1e-4, 1e6)),
    (["workload", "--agents", "2"], "--block-tokens", _int_in(1, 65_536)),
    (["workload", "--agents", "2"], "--mooncake-block-tokens", _int_in(1, 65_536)),
    (["simulate", "--policy", "dualpath"], "--agents", _int_in(1, 100_000)), (SIM, "--seed", _int_in(0, 2**32 - 1)),
    (SIM, "--aps", _float_in(1e-4, 1e6)), (SIM, "--jobs", _int_in(1, 256)),
    (SIM, "--slo-ttft-s", _float_in(0, 604_800, True)), (SIM, "--slo-tpot-s", _float_in(0, 604_800, True)),
    (PLAN, "--batch", _int_in(1, 100_000)), (PLAN, "--time-limit", _float_in(0, 604_800, True)),
    (PLAN, "--seed", _int_in(0, 2**32 - 1)), ([*PLAN, "--sweep", "pd"], "--gpus", _int_in(16, 16_384)),
    ([*PLAN, "--sweep", "pd", "--gpus", "32"], "--simulate-agents", _int_in(0, 100_000)),
    (RUN, "--agents", _int_in(1, 100_000)), (RUN, "--turns", _int_in(1, 10_000)),
    (RUN, "--warm-turns", _int_in(0, 10_000)), (RUN, "--block-tokens", _int_in(1, 4_096)),
    (RUN, "--scale", _float_in(1, 1e6)), (RUN, "--aps", _float_in(1e-4, 1e6)),
    (RUN, "--timeout-s", _float_in(0, 604_800, True)), (RUN, "--seed", _int_in(0, 2**32 - 1)),
    (ENGINE, "--port", _int_in(0, 65_535)), (ENGINE, "--data-port", _int_in(0, 65_535)),
    (ENGINE, "--block-tokens", _int_in(1, 4_096)), (ENGINE, "--buffer-blocks", _int_in(1, 1 << 20)),
    (ENGINE, "--hbm-bytes", _int_in(1, 1 << 44)), (ENGINE, "--snic-bytes-per-s", _float_in(0, 1e13, True)),
    (ENGINE, "--corrupt-block-rate", _float_in(0, 1)), (ENGINE, "--cpu-threads", _int_in(1, 1024)),
    (SERVE, "--port", _int_in(0, 65_535)), (SERVE, "--window", _int_in(1, 1_000_000)),
    (SERVE, "--budget-ms", _float_in(0, 60_000, True)), (SERVE, "--block-tokens", _int_in(1, 65_536)),
]
# String flags: (prefix, flag, values, values that must be refused).
STRING_FLAGS: list[tuple[list[str], str, list[str], set[str]]] = [
    (ENGINE, "--host", ["", "a b", "-x", "256.1.1.1x", "::1", "localhost", "a" * 300, "ex ample.com"],
     {"", "a b", "a" * 300, "ex ample.com"}),
    (ENGINE, "--log-level", ["LOUD", "", "info", "debug", "5"], {"LOUD", "", "5"}),
    (ENGINE, "--scheduler", ["x", "host:²", "host:99999", ":1", "h:1"], {"x", "host:²", "host:99999", ":1"}),
    (ENGINE, "--device", ["gpu", "cuda:x", "", "tpu"], {"gpu", "cuda:x", "", "tpu"}),
    (SIM[:-2], "--policy", ["", ",", " , ", "nosuch"], {"", ",", " , ", "nosuch"}),
    (["info"], "--cluster", ["", "100000P1D", "2P4D" * 1000, "0P1D", "1P0D", "²P٣D", "9" * 5000 + "P1D"],
     {"", "100000P1D", "2P4D" * 1000, "0P1D", "1P0D", "²P٣D", "9" * 5000 + "P1D"}),
    (["info"], "--model", ["", "nosuch", "a" * 5000], {"", "nosuch", "a" * 5000}),
    (["workload", "--agents", "2"], "--workload", ["", "nosuch", "mooncake:", "x.jsonl"], {"", "nosuch", "mooncake:",
                                                                                          "x.jsonl"}),
    (RUN, "--inject", ["kill-engine:DE0@nans", "corrupt-block:nan", "corrupt-block:2", "kill-engine:DE0@-1s",
                       "corrupt-block:²", "kill-engine:DE0@1e308s", "", "x"],
     {"kill-engine:DE0@nans", "corrupt-block:nan", "corrupt-block:2", "kill-engine:DE0@-1s", "corrupt-block:²", "",
      "x", "kill-engine:DE0@1e308s"}),
]
# Output paths: the first value exists as a directory, the second as a file.
OUTPUTS: list[tuple[list[str], str, bool]] = [
    (["info", "--cluster", "1P1D"], "--json", True), (["workload", "--agents", "1"], "--jsonl", True),
    (SIM, "--json", True), (SIM, "--out", False), (PLAN, "--json", True), (PLAN, "--out", False),
    (["verify", "--traffic", "traffic.toml", "--synthesize"], "", True),
]


def flag_cases() -> list[Case]:
    cases = []
    for prefix, flag, valid in FLAGS:
        family = f"flags:{prefix[0]}"
        for value in FLAG_VALUES:
            must = not valid(value)
            cases.append(Case(family, f"{flag} {value[:20]!r}", [*prefix, flag, value], {}, must,
                              f"{flag}|{flag[2:]}" if must else "", SENTINELS.get(prefix[0], "")))
    for prefix, flag, values, refused in STRING_FLAGS:
        for value in values:
            must = value in refused
            # --cluster/--model/--workload name the value's source (the shorthand, the file), not the flag
            named = f"{flag}|{flag[2:]}" if must and flag not in ("--cluster", "--model", "--workload") else ""
            cases.append(Case(f"flags:{prefix[0]}", f"{flag} {value[:20]!r}", [*prefix, flag, value], {}, must,
                              named, SENTINELS.get(prefix[0], "")))
    proofs = _proof_set()
    for prefix, flag, is_file in OUTPUTS:
        argv_flag = [flag] if flag else []
        name = flag or prefix[-1]
        for target, content in (("out", DIRECTORY), ("out", b"x")):
            if (content == DIRECTORY) != is_file:
                continue
            cases.append(Case(f"flags:{prefix[0]}", f"{name} is an existing {'directory' if is_file else 'file'}",
                              [*prefix, *argv_flag, target], {target: content, **proofs}, True, name))
    return cases


# ----- running -----------------------------------------------------------------------------------------

@dataclass
class Result:
    case: Case
    outcome: str
    seconds: float
    stderr_tail: str


def _materialise(folder: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = folder / name
        if content == DIRECTORY:
            path.mkdir()
        elif content == FIFO:
            os.mkfifo(path)
        elif content == DEVZERO:
            path.symlink_to("/dev/zero")
        else:
            assert isinstance(content, bytes)
            path.write_bytes(content)


def classify(case: Case, code: int | None, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code is None:
        return "hang"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr or "bad_alloc" in stderr:
        return "memory"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if code < 0:
        return "memory" if code == -signal.SIGKILL else "crash"
    if code == 2:
        if len(lines) != 1:
            return "multi-line"
        if case.sentinel and case.sentinel in lines[0]:
            return "must-reject-accepted" if case.must_reject else "accepted"
        if case.named and not any(name in lines[0] for name in case.named.split("|")):
            return "unnamed"
        return "rejected"
    return "must-reject-accepted" if case.must_reject else "accepted"


def run_case(case: Case, dualpath: str, timeout_s: float, mem_bytes: int) -> Result:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    env = {k: v for k, v in os.environ.items() if k not in ("DUALPATH_SECRET", "DUALPATH_API_KEY")}
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    folder = Path(tempfile.mkdtemp(prefix="dualpath-fuzz-"))
    started = time.perf_counter()
    try:
        _materialise(folder, case.files)
        for attempt in range(5):  # a reinstall of the package removes the script for a moment
            try:
                process = subprocess.Popen([dualpath, *case.argv], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limits,
                                           start_new_session=True)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
                time.sleep(2.0)
        try:
            _, err = process.communicate(timeout=timeout_s)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, err = process.communicate()
            code = None
        stderr = err.decode("utf-8", "replace")
        return Result(case, classify(case, code, stderr), time.perf_counter() - started, stderr[-1500:])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plan_document(dualpath: str) -> bytes:
    """A real plan of TRACE (2 requests, greedy), written by the command under test."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "trace.jsonl").write_bytes(PLAN_TRACE)
        subprocess.run([dualpath, "plan", "--workload", "trace.jsonl", "--batch", "2", "--solver", "greedy",
                        "--json", "plan.json"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
        return (Path(folder) / "plan.json").read_bytes()


def all_cases(seed: int, per_format: int, dualpath: str) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for fmt in formats(plan_document(dualpath)):
        cases += format_cases(fmt, random.Random(f"{seed}:{fmt.family}"), per_format)
    cases += flag_cases()
    rng.shuffle(cases)  # spread the slow families over both workers
    return cases


def table(results: list[Result], group: Callable[[str], str] = lambda family: family) -> str:
    """Outcome counts per family (or per `group(family)`: `summary` folds them into files and flags)."""
    by_family: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_family[group(r.case.family)][r.outcome] += 1
    total: Counter = Counter(r.outcome for r in results)
    headers = ["family", "cases", "must-reject", *OUTCOMES]
    musts: Counter = Counter(group(r.case.family) for r in results if r.case.must_reject)
    rows = [[f, sum(c.values()), musts[f], *(c[o] for o in OUTCOMES)] for f, c in sorted(by_family.items())]
    rows.append(["total", len(results), sum(musts.values()), *(total[o] for o in OUTCOMES)])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    """The table folded into two rows: file formats (19 families) and flags (one family per command)."""
    return table(results, lambda family: "flags (9 commands)" if family.startswith("flags:") else
                 f"files ({len({r.case.family for r in results if not r.case.family.startswith('flags:')})} formats)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dualpath", default=str(Path(sys.executable).parent / "dualpath"),
                        help="the installed command (default: beside this Python)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-format", type=int, default=110, help="cases per file format (default 110)")
    parser.add_argument("--only", help="run only families containing this text")
    parser.add_argument("--count", type=int, help="run at most this many cases")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=30.0, help="a case running longer is a hang")
    parser.add_argument("--mem-gib", type=float, default=4.0, help="address-space cap of each case (RLIMIT_AS)")
    parser.add_argument("--json", metavar="FILE", help="write the table's counts and every failure here")
    parser.add_argument("--show", type=int, default=40, help="print this many failures")
    args = parser.parse_args(argv)
    cases = all_cases(args.seed, args.per_format, args.dualpath)
    if args.only:
        cases = [c for c in cases if args.only in c.family]
    cases = cases[: args.count] if args.count else cases
    started = time.perf_counter()
    print(f"{len(cases):,} cases ({sum(c.must_reject for c in cases):,} must-reject), {args.workers} workers, "
          f"timeout {args.timeout_s:g} s, RLIMIT_AS {args.mem_gib:g} GiB", file=sys.stderr, flush=True)
    results = []
    with ThreadPoolExecutor(args.workers) as pool:
        for result in pool.map(lambda c: run_case(c, args.dualpath, args.timeout_s, int(args.mem_gib * 2**30)),
                               cases):
            results.append(result)
            if len(results) % 200 == 0:
                bad = sum(r.outcome in FAILURES for r in results)
                print(f"{len(results):,} / {len(cases):,} cases, {bad} failures, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
    wall_s = time.perf_counter() - started
    failures = [r for r in results if r.outcome in FAILURES]
    for r in failures[: args.show]:
        argv_shown = " ".join(a if len(a) < 60 else a[:40] + "..." for a in r.case.argv)
        tail = r.stderr_tail.strip().splitlines()[-1][:300] if r.stderr_tail.strip() else ""
        print(f"{r.outcome:>20}  {r.case.family}: {r.case.label[:80]}\n{'':>22}dualpath {argv_shown}\n"
              f"{'':>22}{tail}")
    print(table(results))
    print()
    print(summary(results))
    print(f"{len(results):,} cases in {wall_s:.0f} s; {len(failures)} failures")
    if args.json:
        counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
        Path(args.json).write_text(json.dumps({
            "seed": args.seed, "cases": len(results), "must_reject": sum(c.must_reject for c in cases),
            "wall_s": wall_s, "counts": counts, "table": table(results), "summary": summary(results),
            "failures": [{"outcome": r.outcome, "family": r.case.family, "label": r.case.label[:200],
                          "argv": [a[:200] for a in r.case.argv], "stderr": r.stderr_tail} for r in failures]},
            indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
