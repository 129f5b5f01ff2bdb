"""Container engines (Docker, Podman) as the container stage, `watch --containers`,
`doctor` and `cleanup` see them: where their sockets are, whether this user may use
them, a client through the Docker SDK (Podman serves the same API on its socket), the
hog's image built locally from what is on this machine, and the Pod manifest.

The image `beep-av-hog:VERSION` is a root file system made of this machine's own
python3 binary, the shared libraries it and its extension modules load (ldd), the
modules the hog imports (found by importing them in a child interpreter), and the
beep_av files of the hog. It is imported as one layer (`docker import`), needs no
registry and no build step, and is reused while the version is the same."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from beep_av import __version__
from beep_av.errors import CannotStage

ENGINES = ("docker", "podman")
IMAGE_REPO = "beep-av-hog"
LABEL = "beep-av"  # label=1 on every container of ours; cleanup removes only those
NAME_PREFIX = "beep-av-"
HOG_DIR = "/hog"  # where the hog's modules live in the image
PROBE_TIMEOUT = 60  # s: a socket-activated podman service starts slowly under emulation

FIX = {
    "docker": "install Docker and start it (`systemctl start docker`), and run as root or"
    " as a member of the docker group",
    "podman": "install Podman and start its API socket (`systemctl --user start"
    " podman.socket` as yourself, or `systemctl start podman.socket` as root)",
}


def image_tag(version: str = __version__) -> str:
    return f"{IMAGE_REPO}:{version}"


# ---------------------------------------------------------------- sockets


@dataclass(frozen=True)
class EngineSocket:
    """One engine's API socket."""

    engine: str  # docker | podman
    path: str
    rootless: bool = False

    @property
    def base_url(self) -> str:
        return f"unix://{self.path}"

    def describe(self) -> str:
        who = "rootless " if self.rootless else ""
        return f"{who}{self.engine} at {self.path}"


def candidate_sockets(engine: str | None = None, env: dict | None = None,
                      uid: int | None = None) -> list[EngineSocket]:  # fmt: skip
    """Where the engines' sockets may be, in the order tried: the user's own (rootless)
    sockets first for a normal user, the system's otherwise."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    run = env.get("XDG_RUNTIME_DIR") or (f"/run/user/{uid}" if uid else "")
    out: list[EngineSocket] = []
    host = env.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        out.append(EngineSocket("docker", host[len("unix://") :]))
    docker = [EngineSocket("docker", "/var/run/docker.sock")]
    podman = [EngineSocket("podman", "/run/podman/podman.sock")]
    if uid != 0 and run:
        docker.insert(0, EngineSocket("docker", f"{run}/docker.sock", rootless=True))
        podman.insert(0, EngineSocket("podman", f"{run}/podman/podman.sock", rootless=True))
    for e, socks in (("docker", docker), ("podman", podman)):
        if engine in (None, e):
            out += socks
    seen: set[str] = set()
    uniq = []
    for s in out:
        if s.path not in seen and (engine is None or s.engine == engine):
            seen.add(s.path)
            uniq.append(s)
    return uniq


def socket_access(path: str) -> tuple[bool | None, str]:
    """(True, "") when this user may connect; (False, why) when it exists but is refused;
    (None, why) when it is not there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, "no socket"
    except OSError as e:
        return False, e.strerror or str(e)
    import stat

    if not stat.S_ISSOCK(st.st_mode):
        return False, "not a socket"
    if not os.access(path, os.R_OK | os.W_OK):
        return False, f"permission denied (owner uid {st.st_uid}, group {st.st_gid})"
    return True, ""


def _client(sock: EngineSocket, timeout: float = PROBE_TIMEOUT):
    import docker  # the Docker SDK for Python

    return docker.DockerClient(base_url=sock.base_url, version="auto", timeout=timeout)


def connect(engine: str | None = None):
    """(client, EngineSocket) of the first engine that answers. Raises CannotStage naming
    what was tried and the fix."""
    try:
        import docker  # noqa: F401
    except ImportError:
        raise CannotStage("the Docker SDK for Python is missing (`pip install docker`)") from None
    tried = []
    for sock in candidate_sockets(engine):
        ok, why = socket_access(sock.path)
        if not ok:
            tried.append(f"{sock.path}: {why}")
            continue
        try:
            client = _client(sock)
            client.ping()
            return client, sock
        except Exception as e:  # the SDK raises requests' and its own errors
            tried.append(f"{sock.path}: {type(e).__name__}")
    names = [engine] if engine else list(ENGINES)
    fixes = "; or ".join(FIX[n] for n in names)
    raise CannotStage(
        f"no container engine answers ({'; '.join(tried) or 'no socket found'}): {fixes}"
    )


def doctor_lines() -> list[tuple[bool | None, str]]:
    """One (ok, detail) per engine: found, and whether this user may use its socket."""
    out = []
    for engine in ENGINES:
        socks = candidate_sockets(engine)
        found = [(s, *socket_access(s.path)) for s in socks]
        usable = [s for s, ok, _ in found if ok]
        present = [(s, why) for s, ok, why in found if ok is False]
        if usable:
            out.append((True, f"{engine}: {usable[0].describe()}, usable by this user"))
        elif present:
            s, why = present[0]
            out.append((False, f"{engine}: {s.path} is there but refused ({why}): {FIX[engine]}"))
        else:
            out.append((None, f"{engine}: no socket ({', '.join(s.path for s in socks)})"))
    return out


# ---------------------------------------------------------------- the hog's image


def hog_imports(package_root: Path | None = None) -> tuple[set[str], set[Path]]:
    """(top-level modules, beep_av files) that beep_av/hog.py imports, anywhere in its
    code (lazy imports in functions too), following beep_av modules recursively."""
    root = package_root or Path(__file__).resolve().parent.parent
    todo = [root / "beep_av" / "hog.py"]
    files: set[Path] = set()
    mods: set[str] = set()
    while todo:
        f = todo.pop()
        if f in files or not f.exists():
            continue
        files.add(f)
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n.split(".")[0] == "beep_av":
                    parts = n.split(".")
                    for i in range(1, len(parts) + 1):
                        base = root.joinpath(*parts[:i])
                        for cand in (base.with_suffix(".py"), base / "__init__.py"):
                            if cand.exists():
                                todo.append(cand)
                elif n.split(".")[0] != "__future__" and (
                    isinstance(node, ast.Import) or n == node.module
                ):
                    mods.add(n)
    return mods, files


def _names(files: set[Path], root: Path) -> list[str]:
    """beep_av/stages/swap.py -> beep_av.stages.swap"""
    out = []
    for f in sorted(files):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


_PROBE = r"""
import importlib, json, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {""})
print(json.dumps({"files": files, "stdlib": sys.prefix, "platstdlib": sys.exec_prefix,
                  "version": "%d.%d" % sys.version_info[:2]}))
"""

SKIP_DIRS = {"tests", "testing", "__pycache__", "include", "f2py", "_pyinstaller", "typing"}
SKIP_SUFFIXES = (".pyi", ".pyx", ".pxd", ".h", ".c", ".txt", ".pyc")


def _package_tree(top: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        out += [Path(dirpath, f) for f in filenames if not f.endswith(SKIP_SUFFIXES)]
    return out


def _ldd(path: str) -> list[str]:
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


def image_files(python: str | None = None) -> dict[str, str]:
    """{path in the image: path on this machine}: the python3 binary, its libraries,
    the hog's modules, and beep_av's hog files under /hog. Raises CannotStage."""
    python = python or sys.executable
    root = Path(__file__).resolve().parent.parent
    mods, own = hog_imports(root)
    exe = os.path.realpath(python)
    try:
        p = subprocess.run(
            [exe, "-S", "-c", _PROBE, "runpy", "importlib.util", *sorted(mods), *_names(own, root)],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path[1:]])},
        )  # fmt: skip
        probe = json.loads(p.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        raise CannotStage(f"cannot list the hog's modules with {exe}") from None
    ver = probe["version"]
    stdlib = Path(probe["stdlib"], "lib", f"python{ver}")
    files: dict[str, str] = {}
    trees: list[Path] = []
    for f in map(Path, probe["files"]):
        if root in f.parents and (root / "beep_av") in f.parents:
            continue  # beep_av: only the hog's own files, below
        if stdlib in f.parents and "site-packages" not in f.parts:
            files[str(f)] = str(f)
            continue
        # a third-party package (e.g. numpy): its whole tree, and its bundled libs
        sp = next((a for a in f.parents if a.name in ("site-packages", "dist-packages")), None)
        if sp is None:
            continue
        top = sp / f.relative_to(sp).parts[0]
        if top in trees:
            continue
        trees.append(top)
        for extra in [top, sp / f"{top.name}.libs"]:
            if extra.is_dir():
                for g in _package_tree(extra):
                    files[f"{HOG_DIR}/{g.relative_to(sp)}"] = str(g)
            elif extra.is_file():
                files[f"{HOG_DIR}/{extra.name}"] = str(extra)
    for f in own:
        files[f"{HOG_DIR}/{f.relative_to(root)}"] = str(f)
    for pkg in {f.parent for f in own}:  # every package of the hog's files has its __init__
        while pkg != root and (pkg / "__init__.py").exists():
            files[f"{HOG_DIR}/{(pkg / '__init__.py').relative_to(root)}"] = str(pkg / "__init__.py")
            pkg = pkg.parent
    for landmark in ("os.py",):  # how the interpreter finds its prefix
        files[str(stdlib / landmark)] = str(stdlib / landmark)
    for f in (stdlib / "encodings").glob("*.py"):
        files[str(f)] = str(f)
    files[exe] = exe
    sos = [exe] + [src for src in files.values() if ".so" in Path(src).name]
    mapped = [str(t) for t in trees] + [str(t) + ".libs" for t in trees]
    for so in sos:
        for lib in _ldd(so):
            if any(lib.startswith(m + "/") for m in mapped):
                continue  # bundled with its package, found there through its RPATH
            files[lib] = os.path.realpath(lib)
    return files


ENTRY = '''\
"""The container's entry: the hog's stdin is a pipe it holds open itself, with "start"
waiting in it (nobody outside the container writes to it), so it climbs at once and
never sees EOF. Its reports go to stdout, which the engine hands to the show."""
import os, sys
r, w = os.pipe()
os.write(w, b"start\\n")
os.dup2(r, 0)
os.set_inheritable(w, True)
env = dict(os.environ, PYTHONPATH="/hog")
os.execve(sys.executable, [sys.executable, "-S", "-m", "beep_av.hog", *sys.argv[1:]], env)
'''


def build_context(files: dict[str, str] | None = None) -> bytes:
    """The image's root file system as an uncompressed tar (bytes)."""
    files = image_files() if files is None else files
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = {"/tmp": 0o1777, "/var/tmp": 0o1777, "/proc": 0o555, "/sys": 0o555,
                "/dev": 0o755, "/etc": 0o755, HOG_DIR: 0o755}  # fmt: skip
        for d, mode in dirs.items():
            ti = tarfile.TarInfo(d.lstrip("/"))
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(ti)
        for dest in sorted(files):
            ti = tar.gettarinfo(files[dest], arcname=dest.lstrip("/"))
            if ti.issym() or ti.islnk():
                ti = tar.gettarinfo(os.path.realpath(files[dest]), arcname=dest.lstrip("/"))
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mtime = 0
            with open(files[dest], "rb") as f:
                tar.addfile(ti, f)
        exe = python_in_image(files)
        for name, data in ((f"{HOG_DIR}/entry.py", ENTRY.encode()),
                           ("etc/passwd", b"root:x:0:0:root:/:/nonexistent\n")):  # fmt: skip
            ti = tarfile.TarInfo(name.lstrip("/"))
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tar.addfile(ti, io.BytesIO(data))
        if exe != "/usr/bin/python3":  # the name a manifest or a user would call
            ti = tarfile.TarInfo("usr/bin/python3")
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, exe, 0
            tar.addfile(ti)
    return buf.getvalue()


def python_in_image(files: dict[str, str]) -> str:
    """The interpreter's path in the image: where it is on this machine."""
    return next(d for d in files if re.fullmatch(r".*/bin/python3(\.\d+)?", d))


def repository(engine: str) -> str:
    """Podman's compat API reads a short name as docker.io/library/NAME: our local
    image is localhost/beep-av-hog there."""
    return f"localhost/{IMAGE_REPO}" if engine == "podman" else IMAGE_REPO


def _one(e) -> str:
    return " ".join(str(getattr(e, "explanation", None) or e).split())


def ensure_image(client, say=lambda s: None, engine: str = "docker") -> tuple[str, str, bool]:
    """(tag, python path in the image, built now) of the hog's image, imported from
    this machine's files unless an image of this version is there already."""
    import docker

    repo = repository(engine)
    tag = f"{repo}:{__version__}"
    try:
        img = client.images.get(tag)
        python = (img.labels or {}).get("beep-av.python") or _python_of(img)
        return tag, python, False
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as e:
        raise CannotStage(f"the engine cannot list images ({_one(e)})") from None
    t = time.monotonic()
    files = image_files()
    python = python_in_image(files)
    data = build_context(files)
    say(f"image: importing {tag} ({len(data) >> 20} MiB: python3, its libraries, the hog)")
    try:
        try:
            answer = client.api.import_image_from_data(
                data, repository=repo, tag=__version__,
                changes=[f'LABEL beep-av.python="{python}"', f'LABEL {LABEL}="image"'],
            )  # fmt: skip
        except docker.errors.APIError:  # an engine without `changes` on import
            answer = client.api.import_image_from_data(data, repository=repo, tag=__version__)
        try:
            img = client.images.get(tag)
        except docker.errors.ImageNotFound:  # imported without its name: name it by its id
            m = re.search(r"[0-9a-f]{64}", str(answer))
            if not m:
                raise
            client.images.get(m.group(0)).tag(repo, __version__)
            img = client.images.get(tag)
        # an engine that also named it :latest (Podman): that name is not ours to keep
        if f"{repo}:latest" in (img.tags or []):
            client.images.remove(f"{repo}:latest", noprune=True)
    except docker.errors.APIError as e:
        raise CannotStage(f"the engine cannot import the hog's image ({_one(e)})") from None
    say(f"image: {tag} ready in {time.monotonic() - t:.1f} s (reused by later shows)")
    return tag, python, True


def _python_of(img) -> str:
    """An image without our label (an engine that dropped it): /usr/bin/python3 is in
    every image of ours (the interpreter, or a link to it)."""
    return "/usr/bin/python3"


# ---------------------------------------------------------------- Kubernetes


def pod_manifest(ram: int, swap: int = 0, restarts: int = 0, rate: int = 0,
                 cache: int = 0, image: str | None = None) -> str:  # fmt: skip
    """A Pod (YAML) that runs the same hog under a memory limit. Kubernetes has no
    retry count: restartPolicy OnFailure restarts it with a growing back-off
    (CrashLoopBackOff) until the pod is deleted; `restarts` only goes in a comment."""
    image = image or image_tag()
    mib = max(1, ram >> 20)
    args = ["--rate", str(rate), "--cache", str(cache), "--cache-dir", "/var/tmp",
            "--report-fd", "1", "--parent", "0"]  # fmt: skip
    lines = [
        "# beep-av manifest: the hog of `beep-av show --stage container`, as a Pod.",
        f"# Load the image first: `beep-av manifest` names it {image}; on a node, import",
        "# it from a machine with Docker (`docker save` / `ctr -n k8s.io images import`).",
        "# Watch it: kubectl get pod beep-av-hog -w   (OOMKilled, RESTARTS, CrashLoopBackOff)",
        f"# --restarts {restarts}: Kubernetes has no retry count; OnFailure restarts with",
        "# back-off (10 s, 20 s, 40 s ... 5 min) until the pod is deleted.",
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  name: beep-av-hog",
        "  labels:",
        f'    {LABEL}: "1"',
        "spec:",
        f"  restartPolicy: {'OnFailure' if restarts else 'Never'}",
        "  containers:",
        "    - name: hog",
        f"      image: {image}",
        "      imagePullPolicy: IfNotPresent",
        "      workingDir: /hog",
        '      command: ["/usr/bin/python3", "-S", "/hog/entry.py"]',
        "      args: [" + ", ".join(f'"{a}"' for a in args) + "]",
        "      resources:",
        "        requests:",
        f"          memory: {mib}Mi",
        "        limits:",
        f"          memory: {mib}Mi",
    ]
    if swap:
        lines.insert(5, f"# swap: {swap >> 20} MiB asked; pods get swap only on nodes with"
                        " NodeSwap (LimitedSwap), sized by the kubelet, not here")  # fmt: skip
    return "\n".join(lines) + "\n"
