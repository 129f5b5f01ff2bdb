"""doctor's checks that this machine cannot show for real (the guest tests the rest)."""

from __future__ import annotations

from beep_av import doctor, sampler


def test_killers_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(sampler, "running_killers", lambda proc_root="/proc": ("systemd-oomd",))
    ok, text = doctor.check_killers()
    assert ok is None
    assert text.startswith("systemd-oomd running") and "systemctl stop systemd-oomd" in text
    monkeypatch.setattr(sampler, "running_killers", lambda proc_root="/proc": ("earlyoom",))
    assert "systemctl stop earlyoom" in doctor.check_killers()[1]
    monkeypatch.setattr(sampler, "running_killers", lambda proc_root="/proc": ())
    assert doctor.check_killers()[0] is True


def test_user_memory_delegation(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.os, "getuid", lambda: 1000)
    d = tmp_path / "user.slice" / "user-1000.slice" / "user@1000.service"
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text("cpu pids\n")
    ok, text = doctor.user_memory_delegated(str(tmp_path))
    assert not ok and "Delegate=cpu memory pids" in text
    (d / "cgroup.controllers").write_text("cpu memory pids\n")
    assert doctor.user_memory_delegated(str(tmp_path))[0] is True
