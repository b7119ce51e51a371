"""Flag checks of the command line (and of `python -m dualpath.runtime.engine`): argparse `type=` functions.

Each refuses a bad value at parse time with one line naming the flag (argparse adds it), the value
(shortened) and what was expected, including the named cap: an absurd size fails at once instead of
exhausting memory, and NaN or infinity never reach a comparison that lets them through.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable

# Caps on sizes, named in the messages. Each is far above what the paper runs and far below what
# exhausts a machine: 49,152 agents is the largest benchmark (48P96D), 2,048 the paper's figures.
MAX_AGENTS = 100_000
MAX_BATCH = 100_000  # plan --batch: requests released together
MAX_SWEEP_GPUS = 16_384  # plan --sweep pd --gpus: 2,048 nodes of 8, one split per node count
MAX_BLOCK_TOKENS = 65_536  # tokens per KV block in a workload or a trace (Mooncake uses 512)
MAX_RUN_BLOCK_TOKENS = 4_096  # real engines: a block larger than their context buffer only wastes memory
MAX_TURNS = 10_000
MAX_JOBS = 256
MAX_WINDOW = 1_000_000  # serve --window: requests decided per tick
MAX_SEED = 2**32 - 1
MAX_SECONDS = 7 * 86_400.0  # time limits and SLOs: a week
MIN_APS = 1e-4  # below, one arrival per ~3 h: 500 agents span 58 days of simulated time
MAX_APS = 1e6
MAX_SCALE = 1e6
# Engine processes (`dualpath engine`): what one GPU's engine could use, at most.
MAX_CONTEXT_TOKENS = 1 << 20
MAX_BUFFER_BLOCKS = 1 << 20
MAX_HBM_BYTES = 1 << 44  # 16 TiB
MAX_THREADS = 1_024  # threads, slots and credits
MAX_BYTES_PER_S = 1e13  # 80 Tbps
MAX_SECRET_BYTES = 4_096
MAX_FLAG_CHARS = 4_096  # names and paths given as flags
SHOWN_CHARS = 60  # of a value echoed in a message
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes '٣', float() 'nan'
_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,3})?")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?")


def shown(value: object) -> str:
    """`repr(value)` cut to `SHOWN_CHARS`: a 2 MB argument must not become a 2 MB error line."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} chars)"


def _fail(text: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{shown(text)}: expected {expected}")


def _named(func: Callable[[str], object], name: str) -> Callable[[str], object]:
    func.__name__ = name  # argparse names the type in its own messages (e.g. for a missing value)
    return func


def integer(low: int, high: int, cap: str = "") -> Callable[[str], int]:
    """An ASCII integer in [low, high]; `cap` names the constant behind `high` in the message."""
    expected = f"an integer in {low:,}..{high:,}" + (f" ({cap})" if cap else "")

    def parse(text: str) -> int:
        if not isinstance(text, str) or len(text) > 24 or not _INTEGER.fullmatch(text.strip()):
            raise _fail(text, expected)
        value = int(text)
        if not low <= value <= high:
            raise _fail(text, expected)
        return value

    return _named(parse, "integer")  # type: ignore[return-value]


def number(low: float, high: float, *, low_open: bool = False, cap: str = "") -> Callable[[str], float]:
    """A finite number in [low, high] (or (low, high] with `low_open`); NaN and ±inf are refused."""
    expected = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]" + (f" ({cap})" if cap else "")

    def parse(text: str) -> float:
        try:
            if not isinstance(text, str) or len(text) > 64 or not text.strip().isascii():
                raise ValueError(text)
            value = float(text.replace("_", "!"))  # float() takes '1_0': a typo, not a number
        except ValueError:
            raise _fail(text, expected) from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise _fail(text, expected)
        return value

    return _named(parse, "number")  # type: ignore[return-value]


def name(text: str) -> str:
    """A non-empty name or path: no control characters, at most `MAX_FLAG_CHARS`, and no part longer
    than a file name can be (255 bytes): `stat` of one fails with ENAMETOOLONG, which no reader expects."""
    if (not text.strip() or len(text) > MAX_FLAG_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in text)
            or any(len(part.encode("utf-8", "replace")) > 255 for part in text.split("/"))):
        raise _fail(text, f"a non-empty name or path without control characters, at most {MAX_FLAG_CHARS:,} chars "
                          "and 255 bytes between slashes")
    return text


def names(text: str) -> str:
    """A comma-separated list with at least one name (policies): `--policy ''` or `,` is refused."""
    name(text)
    if not [part for part in text.split(",") if part.strip()]:
        raise _fail(text, "a comma-separated list of at least one name")
    return text


def optional(parse: Callable[[str], str]) -> Callable[[str], str]:
    """`parse`, letting the empty string through (a flag whose default "" means "none")."""

    def check(text: str) -> str:
        return text if text == "" else parse(text)

    return _named(check, parse.__name__)  # type: ignore[return-value]


def out_file(text: str) -> str:
    """An output file: `-` (stdout) or a path that is not a directory and whose folder is not a file."""
    name(text)
    if text == "-":
        return text
    if os.path.isdir(text):
        raise _fail(text, "an output file, not a directory")
    parent = os.path.dirname(os.path.abspath(text))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise _fail(text, f"an output file in a folder ({shown(parent)} is not one)")
    return text


def out_dir(text: str) -> str:
    """An output folder: absent (created) or a directory, never an existing file."""
    name(text)
    if os.path.exists(text) and not os.path.isdir(text):
        raise _fail(text, "an output folder, not an existing file")
    return text


def in_file(text: str) -> str:
    """An input file that exists and is a regular file (a FIFO would block, /dev/zero never end)."""
    name(text)
    try:
        mode = os.stat(text).st_mode
    except OSError as exc:
        raise _fail(text, f"a readable file ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _fail(text, "a regular file (not a directory, FIFO or device)")
    return text


def port(text: str) -> int:
    return integer(0, 65_535)(text)


def host(text: str) -> str:
    """An IP address or a DNS name (checked, not resolved: a lookup could hang)."""
    name(text)
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise _fail(text, "an IP address or a host name")
    return text


def address(text: str) -> str:
    """HOST:PORT (an IPv6 host in brackets or not: the port follows the last colon)."""
    host_part, _, port_part = text.rpartition(":")
    try:
        host(host_part.strip("[]"))
        port(port_part)
    except argparse.ArgumentTypeError:
        raise _fail(text, "HOST:PORT with a port in 0..65,535") from None
    return text


def device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise _fail(text, "cpu, cuda or cuda:N")
    return text


def log_level(text: str) -> str:
    if not isinstance(text, str) or text.upper() not in LOG_LEVELS:
        raise _fail(text, "one of " + ", ".join(LOG_LEVELS))
    return text.upper()


# The flags most commands share, built once.
agents = integer(1, MAX_AGENTS, "flags.MAX_AGENTS")
seed = integer(0, MAX_SEED, "flags.MAX_SEED")
block_tokens = integer(1, MAX_BLOCK_TOKENS, "flags.MAX_BLOCK_TOKENS")
run_block_tokens = integer(1, MAX_RUN_BLOCK_TOKENS, "flags.MAX_RUN_BLOCK_TOKENS")
seconds = number(0.0, MAX_SECONDS, low_open=True, cap="flags.MAX_SECONDS")
aps = number(MIN_APS, MAX_APS, cap="flags.MIN_APS..MAX_APS")
batch = integer(1, MAX_BATCH, "flags.MAX_BATCH")
sweep_gpus = integer(2, MAX_SWEEP_GPUS, "flags.MAX_SWEEP_GPUS")
agents_or_none = integer(0, MAX_AGENTS, "flags.MAX_AGENTS")  # 0 turns the feature off
jobs = integer(1, MAX_JOBS, "flags.MAX_JOBS")
turns = integer(1, MAX_TURNS, "flags.MAX_TURNS")
scale = number(1.0, MAX_SCALE, cap="flags.MAX_SCALE")
fraction = number(0.0, 1.0)
