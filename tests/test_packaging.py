"""The wheel a user installs (`pip install` of the wheel, or `pipx install .`).

The assets (captions, presets, the example recording) stay in the top-level `assets/`
folder and ship in the wheel as package data, `beep_av/assets`, read through
importlib.resources (beep_av.resources). The unit tests check the lookup from this
checkout. The real ones build the wheel from a copy of the checkout, install it and
its dependencies from the package index into a fresh venv outside the checkout (one venv
for the module), and from a folder outside the checkout run
`beep-av rehearse --preset classroom --captions fr` through every output that can run
here: headless, a window on SDL's dummy driver, and a terminal in a private tmux server.
The three rehearsals play at the same time (each takes the preset's ~40 s)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beep_av import cli, resources
from beep_av.errors import BadInput
from tests.conftest import ROOT, require

MiB = 1024**2
ASSETS = ROOT / "assets"
ASSET_FILES = sorted(p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file())
FR = tomllib.loads((ASSETS / "captions" / "fr.toml").read_text(encoding="utf-8"))
CLASSROOM = tomllib.loads((ASSETS / "presets" / "classroom.toml").read_text(encoding="utf-8"))
COLS, ROWS = 120, 40
NOT_FOUND = ("does not exist", "known: none", "Traceback")

# ---------------------------------------------------------------- the lookup (unit)


def test_a_checkout_reads_the_top_level_assets():
    assert Path(str(resources.assets())) == ASSETS
    assert resources.asset("captions", "fr.toml").is_file()
    assert resources.example_recording() == ASSETS / "example-show.jsonl"


def test_packaged_assets_come_first(tmp_path, monkeypatch):
    (tmp_path / "assets" / "presets").mkdir(parents=True)
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    assert resources.assets() == tmp_path / "assets"
    from beep_av.config import preset_names

    assert preset_names() == []  # the (empty) packaged folder, not the checkout's


def test_example_names_the_shipped_recording(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(cli.recording_path("example")) == ASSETS / "example-show.jsonl"
    assert cli.recording_path("talk.jsonl") == "talk.jsonl"
    (tmp_path / "example").write_text("")
    assert cli.recording_path("example") == "example"  # a file of that name wins


def test_a_missing_example_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "assets", lambda: tmp_path)
    with pytest.raises(BadInput, match="example recording is not installed"):
        resources.example_recording()


# ---------------------------------------------------------------- the installed wheel (real)


@dataclass
class Venv:
    wheel: Path
    build_log: str
    root: Path
    elsewhere: Path  # a working folder outside the checkout
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def run(self, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / "beep-av"), *args],
            cwd=self.elsewhere,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )


def _clean_env() -> dict[str, str]:
    """This environment without the checkout on the path and without local wheel folders."""
    drop = {"PIP_FIND_LINKS", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", PIP_NO_INPUT="1")
    return env


def _step(cmd: list, env: dict, what: str, timeout: float = 300) -> str:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    log = p.stdout + p.stderr
    assert p.returncode == 0, f"{what} failed (exit {p.returncode}):\n{log[-4000:]}"
    return log


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    require(importlib.util.find_spec("ensurepip") is not None, "no ensurepip (apt python3-venv)")
    top = tmp_path_factory.mktemp("wheel")
    assert not top.resolve().is_relative_to(ROOT)
    env = _clean_env()
    timings: dict[str, float] = {}
    # build from a copy: an in-tree build would leave build/ (and stale files) in the checkout
    t0 = time.monotonic()
    src = top / "src"
    junk = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "out")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*junk, ".hypothesis"))
    dist = top / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dist), str(src)]
    build_log = _step(cmd, env, "pip wheel")
    (wheel,) = dist.glob("beep_av-*.whl")
    timings["build"] = time.monotonic() - t0
    t0 = time.monotonic()
    root = top / "venv"
    _step([sys.executable, "-m", "venv", str(root)], env, "python -m venv")
    _step([str(root / "bin" / "python"), "-m", "pip", "install", str(wheel)], env, "pip install")
    timings["venv+install"] = time.monotonic() - t0
    elsewhere = top / "elsewhere"
    elsewhere.mkdir()
    return Venv(wheel, build_log, root, elsewhere, env, timings)


def _ok(p: subprocess.CompletedProcess | Run, what: str) -> str:
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{what}: exit {p.returncode}\n{out[-3000:]}"
    for bad in NOT_FOUND:
        assert bad not in out, f"{what}: {bad!r} in the output\n{out[-3000:]}"
    return out


@pytest.mark.real
@pytest.mark.slow
def test_the_wheel_ships_the_assets_and_an_spdx_license(venv: Venv):
    names = zipfile.ZipFile(venv.wheel).namelist()
    shipped = sorted(n.removeprefix("beep_av/assets/") for n in names if "/assets/" in n)
    assert shipped == ASSET_FILES
    assert {"captions/fr.toml", "presets/classroom.toml", "example-show.jsonl"} <= set(shipped)
    with zipfile.ZipFile(venv.wheel) as z:
        for name in ASSET_FILES:
            assert z.read(f"beep_av/assets/{name}") == (ASSETS / name).read_bytes(), name
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta
    assert "Classifier: License ::" not in meta
    warnings = [ln for ln in venv.build_log.splitlines() if re.search(r"\w*Warning\b", ln)]
    assert not warnings, "the build warns:\n" + "\n".join(warnings)
    assert not re.search(r"licen[cs]e.*deprecat|deprecat.*licen[cs]e", venv.build_log, re.I)
    # the installed package, not this checkout, is what runs
    probe = subprocess.run(
        [str(venv.bin / "python"), "-c", "import beep_av.resources as r; print(r.assets())"],
        cwd=venv.elsewhere,
        env=venv.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    where = Path(probe.stdout.strip())
    assert probe.returncode == 0, probe.stderr
    assert where.is_relative_to(venv.root) and where.name == "assets", where
    print(f"\npackaging timings: {venv.timings}")


# ---------------------------------------------------------------- the three rehearsals


REHEARSE = ["rehearse", "--preset", "classroom", "--captions", "fr", "--seed", "7"]


@dataclass
class Run:
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    panes: list[str] = field(default_factory=list)  # terminal: every distinct pane seen


class Tmux:
    """A private tmux server (`tmux -L NAME`), as in tests/test_terminal_tmux.py."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env = name, env

    def __call__(self, *args: str, check: bool = True) -> str:
        p = subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            timeout=20,
            env=self.env,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def close(self) -> None:
        path = self("display", "-p", "#{socket_path}", check=False).strip()
        self("kill-server", check=False)  # only our private server
        if path.endswith(self.name):
            Path(path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def rehearsals(venv: Venv) -> dict[str, Run | None]:
    """Start the three rehearsals together, read the tmux pane while they play."""
    out = venv.elsewhere / "rehearsals"
    out.mkdir()
    beep = str(venv.bin / "beep-av")
    started = time.monotonic()
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    for name, extra in (
        ("headless", ["--output", "headless", "--audio", f"wav:{out}/headless.wav"]),
        ("window", ["--output", "window", "--audio", "off", "--frames", str(out / "frames")]),
    ):
        # --frames-every: only the first frame (calm, its caption on a solid panel)
        extra += ["--frames-every", "1000000"] if name == "window" else []
        log = out / name
        cmd = [beep, *REHEARSE, *extra, "--record", f"{out}/{name}.jsonl"]
        with open(f"{log}.out", "w") as o, open(f"{log}.err", "w") as e:
            p = subprocess.Popen(cmd, cwd=venv.elsewhere, env=venv.env, stdout=o, stderr=e)
        procs[name] = (p, log)
    tmux = None
    status = out / "terminal.status"
    if shutil.which("tmux"):
        tmux = Tmux(f"beeppkg-{os.getpid()}", {**venv.env, "COLORTERM": "truecolor"})
        cmd = " ".join([beep, *REHEARSE, "--output", "terminal", "--audio", "off"])
        cmd += f" --record {out}/terminal.jsonl 2>{out}/terminal.err; echo $? >{status}; sleep 60"
        # the pane stays (sleep) after the show, so a failure can be read from it
        tmux("new-session", "-d", "-x", str(COLS), "-y", str(ROWS), "-c", str(venv.elsewhere), cmd)
    panes: list[str] = []
    runs: dict[str, Run | None] = {}
    try:
        deadline = started + 150
        while time.monotonic() < deadline:
            for name, (p, log) in procs.items():
                if name not in runs and p.poll() is not None:
                    runs[name] = Run(
                        p.returncode,
                        Path(f"{log}.out").read_text(),
                        Path(f"{log}.err").read_text(),
                        time.monotonic() - started,
                    )
            if tmux is not None and "terminal" not in runs:
                if status.exists() and status.read_text().strip():
                    err = out / "terminal.err"
                    rc = int(status.read_text())
                    stderr = err.read_text() if err.exists() else ""
                    runs["terminal"] = Run(rc, "", stderr, time.monotonic() - started, panes)
                else:
                    text = tmux("capture-pane", "-p", check=False)
                    if text and (not panes or panes[-1] != text):
                        panes.append(text)
            if len(runs) == len(procs) + (tmux is not None):
                break
            time.sleep(0.25)
    finally:
        for name, (p, log) in procs.items():
            if p.poll() is None:  # a rehearsal that hung: only the ones started here
                p.kill()
                p.wait()
                runs[name] = Run(None, Path(f"{log}.out").read_text(), "hung", 150.0)
        if tmux is not None:
            runs.setdefault("terminal", Run(None, "", "hung", 150.0, panes))
            tmux.close()
    runs.setdefault("terminal", None)
    print(f"\nrehearsals: { {k: round(v.seconds, 1) for k, v in runs.items() if v} }")
    return runs


def _recording(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _preset_took_effect(records: list[dict]) -> None:
    header = records[0]
    assert header["type"] == "header" and header["stage"] == "rehearsal"
    assert header["ram_limit"] == 512 * MiB and header["swap_limit"] == 256 * MiB
    assert header["cache_bytes"] == 128 * MiB
    assert header["beep_length_ms"] == CLASSROOM["beep-length"] == 800.0
    phases = {r["phase"]: r["t"] for r in records if r["type"] == "phase"}
    assert list(phases) == ["calm", "filling", "evicting", "swapping", "oom", "finale"]
    assert phases["filling"] == pytest.approx(CLASSROOM["calm"], abs=0.5)  # calm = 8 s
    assert [r["length_ms"] for r in records if r["type"] == "beep"] == [800.0]
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "finale"


@pytest.mark.real
@pytest.mark.slow
def test_rehearsal_headless(venv: Venv, rehearsals):
    run = rehearsals["headless"]
    out = _ok(run, "rehearse --output headless")
    assert "512 MiB RAM + 256 MiB swap, 128 MiB cache" in out
    assert re.search(r"^\s+8\.0s\s+filling", out, re.M), out  # the preset's 8 s of calm
    # a rehearsal's card says so: nothing was killed (issue 13)
    assert "REHEARSAL" in out and "rehearsal: nothing was killed" in out
    _preset_took_effect(_recording(venv.elsewhere / "rehearsals" / "headless.jsonl"))
    wav = venv.elsewhere / "rehearsals" / "headless.wav"
    assert wav.stat().st_size > 30 * 48000  # over 30 s of sound rendered by the installed synth


# Rendered by the installed package: where the French caption of `calm` is drawn (the
# same pixels under two noise seeds, unlike the English frame), and how much of the
# window's first frame matches the French and the English reference there.
CHECK_FRAME = r"""
import sys
import pygame
from beep_av.model import Phase, ShowState
from beep_av.noise import Noise
from beep_av.video.captions import Captions
from beep_av.video.scene import Scene

frame = pygame.surfarray.array3d(pygame.image.load(sys.argv[1]))
w, h = frame.shape[:2]
caps = Captions.load()

def ref(lang, seed):
    scene = Scene((w, h), caps, lang)
    return pygame.surfarray.array3d(scene.render(ShowState(captions=lang), Noise(seed)))

fr1, fr2, en1 = ref("fr", 1), ref("fr", 2), ref("en", 1)
mask = (fr1 == fr2).all(axis=2) & (fr1 != en1).any(axis=2)
fr = (frame == fr1).all(axis=2)[mask].mean()
en = (frame == en1).all(axis=2)[mask].mean()
print(f"{w}x{h} {int(mask.sum())} {fr:.4f} {en:.4f}")
"""


@pytest.mark.real
@pytest.mark.slow
def test_rehearsal_in_a_window(venv: Venv, rehearsals):
    run = rehearsals["window"]
    _ok(run, "rehearse --output window (SDL dummy driver)")
    out = venv.elsewhere / "rehearsals"
    _preset_took_effect(_recording(out / "window.jsonl"))
    frames = sorted((out / "frames").glob("frame-*.png"))
    assert [f.name for f in frames] == ["frame-00001.png"]
    check = subprocess.run(
        [str(venv.bin / "python"), "-c", CHECK_FRAME, str(frames[0])],
        cwd=venv.elsewhere,
        env=venv.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    size, pixels, fr, en = check.stdout.split()[-4:]
    print(f"\nwindow frame {size}: caption pixels {pixels}, French match {fr}, English {en}")
    assert int(pixels) > 2000, "no French caption area found"
    assert float(fr) > 0.99 and float(en) < 0.5, check.stdout


@pytest.mark.real
@pytest.mark.slow
def test_rehearsal_in_a_terminal(venv: Venv, rehearsals):
    require(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux)")
    run = rehearsals["terminal"]
    assert run is not None
    _ok(run, "rehearse --output terminal (tmux)")
    seen = "\n".join(run.panes)
    assert "▀" in seen, "no half-block picture in the pane"
    for phase in ("calm", "filling", "evicting", "swapping", "finale"):
        sentence = FR[phase][:40]
        assert sentence in seen, f"French caption of {phase} never shown: {sentence!r}"
    assert "/512 MiB" in seen and "/256 MiB" in seen  # the preset's stage, in the gauges
    _preset_took_effect(_recording(venv.elsewhere / "rehearsals" / "terminal.jsonl"))


@pytest.mark.real
@pytest.mark.slow
def test_the_packaged_example_replays_and_the_readme_route_works(venv: Venv):
    out = _ok(venv.run("replay", "example", "--output", "headless", "--speed", "20"), "replay")
    assert "OOM KILL" in out and "pid 3480 (python3)" in out, out
    picture = venv.elsewhere / "example.png"
    _ok(venv.run("report", "example", "-o", str(picture)), "report example")
    assert picture.stat().st_size > 10_000
    doctor = venv.run("doctor")
    assert doctor.returncode in (0, 3), doctor.stderr
    assert "Traceback" not in doctor.stdout + doctor.stderr
    assert re.search(r"^\S+\s+video\s", doctor.stdout, re.M), doctor.stdout
    presets = venv.run("rehearse", "--preset", "opera", "--output", "headless")
    assert presets.returncode == 2
    assert "known: classroom, talk, tty-art" in presets.stderr
