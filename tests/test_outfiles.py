"""Root writes only where it means to (outfiles.py): every file Beep writes at a path it
was given, in a shared folder (sticky, world-writable, as /tmp) where another user
planted a link or a file, and under sudo (SUDO_UID).

On the real file system, as root (what `sudo beep-av` is), whatever the machine's
fs.protected_symlinks and fs.protected_regular say (0 on this machine): the canary is a
root-only file that a planted link points at; it must never change."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from beep_av import outfiles
from beep_av.errors import BadInput
from tests.conftest import beep, require
from tests.test_show_real import real_stage  # noqa: F401 - the fixture

OTHER = 65534  # nobody: "another user"
CANARY = b"root's own file: must not change\n"
RUN = ["--output", "headless", "--ram", "192M", "--swap", "96M", "--rate", "256M/s"]
RUN += ["--calm", "0.2", "--seed", "7"]


@pytest.fixture
def root():
    require(os.geteuid() == 0, "needs root (the rules are about root following links)")


@pytest.fixture
def bed(tmp_path, root):
    """A shared folder (mode 1777, root's, as /tmp), a root-only canary outside it, and a
    folder of the caller's own."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    canary = vault / "canary"
    canary.write_bytes(CANARY)
    canary.chmod(0o600)
    mine = tmp_path / "mine"
    mine.mkdir()
    return shared, canary, mine


def plant_link(at: Path, target: Path, uid: int = OTHER) -> Path:
    """A symlink at `at` to `target`, owned by `uid` (another user planted it)."""
    os.symlink(target, at)
    os.lchown(at, uid, uid)
    return at


def plant_file(at: Path, uid: int = OTHER) -> Path:
    at.write_bytes(b"theirs\n")
    os.chown(at, uid, uid)
    return at


def assert_one_line_refusal(r, path: Path) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(path) in lines[0] and "refused" in lines[0], lines[0]
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- the rules, in process


def test_a_planted_link_in_a_shared_folder_is_refused(bed):
    shared, canary, _ = bed
    link = plant_link(shared / "talk.jsonl", canary)
    with pytest.raises(BadInput, match="symlink of uid 65534") as e:
        outfiles.check_file(str(link), f"--record {link}")
    assert str(link) in e.value.message and "\n" not in e.value.message
    with pytest.raises(BadInput):
        outfiles.open_file(str(link), "x")
    assert canary.read_bytes() == CANARY and link.is_symlink()


def test_another_users_file_in_a_shared_folder_is_refused(bed):
    shared, _, _ = bed
    theirs = plant_file(shared / "talk.wav")
    with pytest.raises(BadInput, match="belongs to uid 65534"):
        outfiles.open_file(str(theirs), "x")
    assert theirs.read_bytes() == b"theirs\n" and theirs.stat().st_uid == OTHER


def test_a_planted_link_on_the_way_is_refused(bed):
    """Not only the last component: a link to a folder, planted in the shared folder."""
    shared, canary, _ = bed
    plant_link(shared / "talks", canary.parent)
    path = shared / "talks" / "canary"
    with pytest.raises(BadInput, match="symlink of uid 65534"):
        outfiles.open_file(str(path), "x")
    assert canary.read_bytes() == CANARY


def test_a_chain_of_links_is_checked_at_each_step(bed, tmp_path):
    """The caller's own link points into the shared folder, at another user's link."""
    shared, canary, mine = bed
    plant_link(shared / "evil", canary)
    own = mine / "talk.jsonl"
    os.symlink(shared / "evil", own)
    with pytest.raises(BadInput, match="symlink of uid 65534"):
        outfiles.open_file(str(own), "x")
    assert canary.read_bytes() == CANARY


def test_the_callers_own_link_is_followed_and_stays_a_link(bed):
    shared, _, mine = bed
    target = mine / "target.jsonl"
    target.write_text("old\n")
    link = plant_link(shared / "talk.jsonl", target, uid=0)
    with outfiles.open_file(str(link), "x", "w") as out:
        out.f.write("new\n")
    assert target.read_text() == "new\n" and link.is_symlink()


def test_a_link_of_the_folders_owner_is_followed(tmp_path, root):
    """The kernel's rule: in a shared folder, a link of the folder's owner is trusted."""
    shared = tmp_path / "theirs"
    shared.mkdir()
    shared.chmod(0o1777)
    os.chown(shared, OTHER, OTHER)
    target = tmp_path / "t.txt"
    plant_link(shared / "x.txt", target, uid=OTHER)
    with outfiles.open_file(str(shared / "x.txt"), "x", "w") as out:
        out.f.write("ok")
    assert target.read_text() == "ok"


def test_a_link_outside_shared_folders_is_followed(tmp_path, root):
    """Outside a sticky world-writable folder links are followed, as by the kernel."""
    target = tmp_path / "t.txt"
    plant_link(tmp_path / "l.txt", target, uid=OTHER)
    with outfiles.open_file(str(tmp_path / "l.txt"), "x", "w") as out:
        out.f.write("ok")
    assert target.read_text() == "ok"


def test_a_replaced_file_is_written_under_a_new_name_and_renamed(tmp_path):
    """An existing file is never opened for writing: a hard link to it (what another
    name of the same inode would see) keeps the old content."""
    old = tmp_path / "r.png"
    old.write_bytes(b"old")
    old.chmod(0o640)
    other_name = tmp_path / "hard"
    os.link(old, other_name)
    with outfiles.open_file(str(old), "x", at_close=True) as out:
        out.f.write(b"new")
        assert old.read_bytes() == b"old"  # takes its name only when whole
    assert old.read_bytes() == b"new" and other_name.read_bytes() == b"old"
    assert stat.S_IMODE(old.stat().st_mode) == 0o640  # the replaced file's mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard", "r.png"]


def test_a_failed_write_leaves_nothing_and_the_old_file_intact(tmp_path):
    old = tmp_path / "r.png"
    old.write_bytes(b"old")
    with pytest.raises(RuntimeError), outfiles.open_file(str(old), "x", at_close=True) as out:
        out.f.write(b"half")
        raise RuntimeError("drawing failed")
    assert old.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_a_stream_takes_its_name_at_once(tmp_path):
    """A recording or a WAV: a crash mid-show still leaves what was written."""
    path = tmp_path / "r.jsonl"
    path.write_text("old\n")
    out = outfiles.open_file(str(path), "x", "w", buffering=1)
    out.f.write("line\n")
    assert path.read_text() == "line\n"
    out.f.close()
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda d: "", "empty"),
        (lambda d: str(d), "is a directory"),
        (lambda d: str(d) + "/", "is a directory"),
        (lambda d: str(d / "no" / "x"), "does not exist"),
        (lambda d: str(d / "f" / "x"), "not a directory"),
        (lambda d: "/dev/null", "not a regular file"),
    ],
)
def test_plain_problems_are_one_line(tmp_path, make, why):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(BadInput, match=why) as e:
        outfiles.check_file(make(tmp_path), "--record X")
    assert e.value.message.startswith("--record X: ") and "\n" not in e.value.message


def test_a_loop_of_links_is_one_line(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(BadInput, match="too many levels"):
        outfiles.check_file(str(tmp_path / "a"), "x")


def test_a_frames_folder_is_made_with_its_parents_and_handed_to_the_sudo_user(
    tmp_path, root, monkeypatch
):
    monkeypatch.setenv("SUDO_UID", str(OTHER))
    monkeypatch.setenv("SUDO_GID", str(OTHER))
    fd = outfiles.make_dir(str(tmp_path / "a" / "b"), "--frames x")
    try:
        out = outfiles.open_in(fd, str(tmp_path / "a" / "b"), "frame-00001.png", "x")
        out.f.write(b"png")
        out.f.close()
    finally:
        os.close(fd)
    for p in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "frame-00001.png"):
        assert (p.stat().st_uid, p.stat().st_gid) == (OTHER, OTHER), p
    assert tmp_path.stat().st_uid == 0  # what existed stays whose it was


def test_no_sudo_user_no_handing_over(tmp_path, root, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    with outfiles.open_file(str(tmp_path / "x"), "x") as out:
        out.f.write(b"1")
    assert (tmp_path / "x").stat().st_uid == 0
    monkeypatch.setenv("SUDO_UID", "0")  # sudo from root: nobody else to hand it to
    assert outfiles.sudo_owner() is None


# ---------------------------------------------------------------- the commands, as users run them


@pytest.mark.real
@pytest.mark.parametrize(
    "option, name",
    [("--record", "talk.jsonl"), ("--audio", "talk.wav")],
    ids=["record", "wav"],
)
@pytest.mark.parametrize("planted", ["link", "file"])
def test_rehearse_refuses_a_planted_output(bed, option, name, planted):
    shared, canary, _ = bed
    at = shared / name
    plant_link(at, canary) if planted == "link" else plant_file(at)
    value = f"wav:{at}" if option == "--audio" else str(at)
    other = ["--audio", "off"] if option == "--record" else []
    r = beep("rehearse", *RUN, *other, option, value)
    assert_one_line_refusal(r, at)
    assert canary.read_bytes() == CANARY
    assert sorted(p.name for p in shared.iterdir()) == [name]  # nothing else written
    assert at.is_symlink() if planted == "link" else at.read_bytes() == b"theirs\n"


@pytest.mark.real
def test_rehearse_refuses_planted_frames(bed):
    """--frames DIR with links planted under the names Beep would write."""
    shared, canary, _ = bed
    plant_link(shared / "frame-00002.png", canary)
    r = beep("rehearse", *RUN, "--audio", "off", "--output", "window", "--frames", str(shared))
    assert_one_line_refusal(r, shared / "frame-00002.png")
    assert canary.read_bytes() == CANARY
    assert [p.name for p in shared.iterdir()] == ["frame-00002.png"]


@pytest.mark.real
def test_a_real_show_refuses_before_any_stage_exists(bed):
    """`beep-av show` as root: exit 2 before a cgroup, swapfile or hog exists."""
    from tests.test_show_real import residue

    shared, canary, _ = bed
    link = plant_link(shared / "talk.jsonl", canary)
    before = residue()
    r = beep("show", *RUN, "--audio", "off", "--record", str(link))
    assert_one_line_refusal(r, link)
    assert residue() == before and canary.read_bytes() == CANARY


@pytest.mark.real
def test_report_refuses_a_planted_picture(bed):
    shared, canary, _ = bed
    link = plant_link(shared / "x.png", canary)
    r = beep("report", "example", "-o", str(link))
    assert_one_line_refusal(r, link)
    assert canary.read_bytes() == CANARY and link.is_symlink()


@pytest.mark.real
def test_explain_refuses_a_planted_picture(bed):
    shared, canary, _ = bed
    link = plant_link(shared / "why.png", canary)
    log = Path(__file__).parent / "fixtures" / "oom-local" / "story-6.18-v1.log"
    r = beep("explain", str(log), "-o", str(link))
    assert_one_line_refusal(r, link)
    assert canary.read_bytes() == CANARY and link.is_symlink()
    assert r.stdout == ""  # refused before reading: nothing printed, nothing lost


@pytest.mark.real
def test_the_callers_own_link_is_still_followed_by_a_show(bed):
    shared, _, mine = bed
    target = mine / "talk.jsonl"
    link = plant_link(shared / "talk.jsonl", target, uid=0)
    r = beep("rehearse", *RUN, "--audio", "off", "--record", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and target.read_text().startswith('{"type":"header"')


@pytest.mark.real
def test_report_replaces_an_old_picture_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "r.png"
    out.write_bytes(b"an old picture")
    r = beep("report", "example", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


@pytest.mark.real
def test_under_sudo_the_users_files_are_theirs(tmp_path, root):
    """SUDO_UID set as sudo sets it: the recording, the WAV, the frames (and the
    folders made for them) belong to the user; what was there stays root's."""
    env = {"SUDO_UID": str(OTHER), "SUDO_GID": str(OTHER)}
    rec, wav, frames = tmp_path / "r.jsonl", tmp_path / "s.wav", tmp_path / "f" / "g"
    r = beep(
        "rehearse", *RUN, "--output", "window", "--frames", str(frames), "--frames-every", "25",
        "--record", str(rec), "--audio", f"wav:{wav}", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    made = [rec, wav, frames.parent, frames, *frames.iterdir()]
    assert len(made) > 4  # some frames were saved
    for p in made:
        assert (p.stat().st_uid, p.stat().st_gid) == (OTHER, OTHER), p
    assert tmp_path.stat().st_uid == 0


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.usefixtures("real_stage")
def test_under_sudo_a_real_show_gives_the_user_their_files_and_keeps_the_stages(tmp_path):
    """A real show as `sudo` runs it: while the hog swaps, the stage's swapfile, its
    folder and the state dir are root's; the recording is already the user's. At the
    end the recording and the WAV are the user's."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.fx_cgroup import beep_swaps
    from tests.test_show_real import _wait_for_line

    rec, wav = tmp_path / "r.jsonl", tmp_path / "s.wav"
    args = ["--ram", "192M", "--swap", "128M", "--cache", "32M", "--rate", "48M/s"]
    args += ["--output", "headless", "--calm", "0.3", "--record", str(rec), "--audio", f"wav:{wav}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", SUDO_UID=str(OTHER), SUDO_GID=str(OTHER))
    env.pop("BEEP_AV_STATE_DIR", None)  # the real state dir, as a sudo show has it
    proc = subprocess.Popen(
        [sys.executable, "-m", "beep_av", "show", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_for_line(proc, " swapping ")
        swaps = [s for s in beep_swaps() if "beep-av-swap" in s]
        stage_files = [Path(s) for s in swaps] + [Path(s).parent for s in swaps]
        state = Path("/run/beep-av")
        stage_files += [state, *state.iterdir()]
        owners = {str(p): p.stat().st_uid for p in stage_files}
        rec_owner = rec.stat().st_uid
        proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()
    assert swaps, "this show was meant to provision its own swapfile (no swap here)"
    assert set(owners.values()) == {0}, owners
    assert rec_owner == OTHER
    for p in (rec, wav):
        assert (p.stat().st_uid, p.stat().st_gid) == (OTHER, OTHER), p
