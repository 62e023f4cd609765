"""Compile the project's own .proto files under protos/ into xds_server/_proto/.

The generated modules are checked in so that an installed package never needs protoc;
tests/unit/test_generated_protos.py regenerates into a temporary folder and fails if the
checked-in output is stale. Run: python scripts/gen_protos.py [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto below protos/ into out/, return the files written."""
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(PROTOS.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}"]
    rc = protoc.main([*args, *map(str, sources)])
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    return sorted(out / src.relative_to(PROTOS).with_name(src.stem + suffix)
                  for src in sources for suffix in ("_pb2.py", "_pb2.pyi"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
