"""The file source's own cost per write in a large config directory, in process.

    python -m bench.file_source --files 5000 --writes 20

Writes `--files` one-Pod manifests into a temp directory, starts a FileSource on it (real
watchfiles events, a real Store), then rewrites one file `--writes` times atomically (temp file +
rename over, as config tools do) and prints the process CPU from each write to the Store holding
the new object, and how many times the source walked the whole tree. The store and the waiting
loop are included; the server's push is not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from xds_server.config import ObjectRef
from xds_server.sources.files import FileSource
from xds_server.store import Store


def pod(name: str, version: int) -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns, labels: {{v: '{version}'}}}}\n"


def write_atomically(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def make_tree(files: int) -> str:
    root = tempfile.mkdtemp(prefix="xds-file-source-")
    for i in range(files):
        with open(os.path.join(root, f"p{i}.yaml"), "w") as f:
            f.write(pod(f"p{i}", 0))
    return root


async def run(root: str, files: int, writes: int) -> None:
    store, stop = Store(), asyncio.Event()
    source = FileSource(root, rescan_interval=3600)  # only events: no periodic walk in the window
    task = asyncio.create_task(source.run(store, stop))
    try:
        while not store.synced(source.name):
            await asyncio.sleep(0.01)
        walks = source.walks
        ref = ObjectRef("Pod", "ns", "p0")
        cpu: list[float] = []
        for version in range(1, writes + 1):
            start = time.process_time()
            write_atomically(os.path.join(root, "p0.yaml"), pod("p0", version))
            while (obj := store.get(ref)) is None or obj.meta.labels.get("v") != str(version):
                await asyncio.sleep(0.002)
            cpu.append(time.process_time() - start)
            await asyncio.sleep(0.05)
        print(f"{files} files, {writes} atomic writes: process CPU per write median "
              f"{1000 * statistics.median(cpu):.1f} ms (max {1000 * max(cpu):.1f} ms); "
              f"whole-tree walks during the writes: {source.walks - walks}")
    finally:
        stop.set()
        await task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--writes", type=int, default=20)
    a = p.parse_args()
    asyncio.run(run(make_tree(a.files), a.files, a.writes))


if __name__ == "__main__":
    main()
