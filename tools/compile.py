"""Compile the simulator, the scheduler and the core's step costs with mypyc (about twice as fast), if this machine can.

    python tools/compile.py            # what `make` runs; prints one line and exits 0 without a compiler
    python tools/compile.py --clean    # remove the build: everything runs as pure Python

The modules are `dualpath.compiled.COMPILED_PACKAGES`, one mypyc group per package, built into
`build/mypyc/<interpreter tag>/` with a manifest of their sources' SHA-256 written last, so an interrupted
build is never used and an edited module is never shadowed by an old build (`dualpath/compiled.py`).
Needs a C compiler and Python's headers; without them the library runs as pure Python, same results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dualpath.compiled import COMPILED_PACKAGES, MANIFEST, build_dir, source_digest, source_path  # noqa: E402


def missing_toolchain() -> str | None:
    """What stops a C extension build here, or None."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")[:1]
    if not cc or shutil.which(cc[0]) is None:
        return f"no C compiler ({' '.join(cc) or 'cc'} not found)"
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.is_file():
        return f"no Python headers ({header} missing; on Debian: python3-dev)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed (it comes with mypy, in the dev extra)"
    return None


def compile_all(out: Path) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    groups = [([str(source_path(f"{package}.{m}", ROOT).relative_to(ROOT)) for m in modules], f"{package}.compiled")
              for package, modules in COMPILED_PACKAGES.items()]
    paths = [p for files, _ in groups for p in files]
    temp = out.parent / f"{out.name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    extensions = mypycify(paths, separate=groups, target_dir=str(temp / "c"), opt_level="3")
    setup(name="dualpath-compiled", ext_modules=extensions,
          script_args=["-q", "build_ext", "--build-lib", str(out), "--build-temp", str(temp / "o")])
    shutil.rmtree(temp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the build and stop")
    args = parser.parse_args(argv)
    out = build_dir(ROOT)
    shutil.rmtree(out, ignore_errors=True)  # never leave a build that no longer matches
    if args.clean:
        print(f"removed {out.relative_to(ROOT)}: the simulator runs as pure Python")
        return 0
    why = missing_toolchain()
    if why:
        print(f"tools/compile.py: {why}; the simulator and scheduler run as pure Python (same results, "
              "about half the speed)")
        return 0
    modules = [f"{package}.{m}" for package, names in COMPILED_PACKAGES.items() for m in names]
    digests = {m: source_digest(source_path(m, ROOT)) for m in modules}
    start = time.perf_counter()
    os.chdir(ROOT)  # mypy finds the modules by the relative paths
    compile_all(out)
    if any(source_digest(source_path(m, ROOT)) != digest for m, digest in digests.items()):
        shutil.rmtree(out, ignore_errors=True)
        print("tools/compile.py: a source changed during the build; run it again", file=sys.stderr)
        return 1
    manifest = {"modules": digests, "python": sys.version.split()[0]}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"compiled {len(modules)} modules with mypyc in {time.perf_counter() - start:.0f} s "
          f"into {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
