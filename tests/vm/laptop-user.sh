# The laptop as a normal user (no sudo): logind session, the user's systemd manager.
# Run by tests/test_guest_laptop.py through scripts/vm.sh --user, results in $OUT.
set -u
# one stuck command fails its own checks, not the whole boot: each beep-av is bounded, and
# on the limit SIGABRT makes Python print every thread's stack (faulthandler) to its stderr
export PYTHONFAULTHANDLER=1
beep-av() { timeout -s ABRT -k 10 "${BEEP_LIMIT:-300}" "$(type -P beep-av)" "$@"; }
mkdir -p "$OUT/info" "$OUT/b" "$OUT/e" "$OUT/g"
id >"$OUT/info/id.txt"
cat /proc/self/cgroup >"$OUT/info/cgroup.txt"
leftovers() {
  { find /sys/fs/cgroup -name 'beep-av*'
    systemctl --user list-units --all --no-legend 'beep-av*'; } >"$1" 2>/dev/null
}

# b. a real show through systemd-run --user --scope, the guest's existing swap
beep-av doctor >"$OUT/b/doctor.txt" 2>&1
echo $? >"$OUT/b/doctor.rc"
for i in 1 2; do
  beep-av show --ram 128M --swap 64M --cache 32M --rate 96M/s --output headless --audio off \
    --record "$OUT/b/show$i.jsonl" >"$OUT/b/show$i.out" 2>"$OUT/b/show$i.err"
  echo $? >"$OUT/b/show$i.rc"
  leftovers "$OUT/b/show$i.left"
done

# g. the freeze as the normal user (issue 23): an unprivileged PSI trigger (2 s windows)
#    on the user scope's memory.pressure, the guest's swap
beep-av show --act freeze --ram 128M --swap 256M --calm 0.3 --output headless --audio off \
  --record "$OUT/g/freeze.jsonl" >"$OUT/g/freeze.out" 2>"$OUT/g/freeze.err"
echo $? >"$OUT/g/freeze.rc"
leftovers "$OUT/g/freeze.left"

# p. PipeWire (issue 25): the user manager starts PipeWire, WirePlumber and pipewire-pulse
#    (their user units, as a desktop session does); a real show plays through it to the
#    sound card (card.wav on the host), its beep at 1500 Hz
mkdir -p "$OUT/p"
systemctl --user start pipewire.socket pipewire-pulse.socket pipewire.service \
  wireplumber.service pipewire-pulse.service >"$OUT/p/start.log" 2>&1
for _ in $(seq 100); do
  [ -S "$XDG_RUNTIME_DIR/pulse/native" ] && break
  sleep 0.2
done
sleep 2  # WirePlumber finds the card
systemctl --user is-active pipewire.service wireplumber.service pipewire-pulse.service \
  >"$OUT/p/active.txt" 2>&1
beep-av doctor >"$OUT/p/doctor.txt" 2>&1
beep-av show --ram 128M --swap 64M --cache 32M --rate 96M/s --output headless \
  --audio device:pulse --beep-freq 1500 --record "$OUT/p/show.jsonl" \
  >"$OUT/p/show.out" 2>"$OUT/p/show.err"
echo $? >"$OUT/p/show.rc"
leftovers "$OUT/p/show.left"
systemctl --user stop pipewire-pulse.socket pipewire.socket pipewire-pulse.service \
  pipewire.service wireplumber.service >/dev/null 2>&1

# e. the wheel: a fresh venv with only the built wheel and its dependencies (offline)
python3 -m venv /tmp/fresh >"$OUT/e/venv.log" 2>&1
/tmp/fresh/bin/pip install -q --no-index --find-links /opt/wheelhouse beep-av >>"$OUT/e/venv.log" 2>&1
echo $? >"$OUT/e/install.rc"
cd /tmp
R=(/tmp/fresh/bin/beep-av rehearse --preset classroom --captions fr --audio off --seed 3)
"${R[@]}" --output headless >"$OUT/e/headless.out" 2>"$OUT/e/headless.err"
echo $? >"$OUT/e/headless.rc"
SDL_VIDEODRIVER=dummy "${R[@]}" --output window --frames "$OUT/e/frames" --frames-every 30 \
  >"$OUT/e/window.out" 2>"$OUT/e/window.err"
echo $? >"$OUT/e/window.rc"
tmux -L beep new-session -d -x 120 -y 40 \
  "${R[*]} --output terminal 2>$OUT/e/terminal.err; echo \$? >$OUT/e/terminal.rc; sleep 30"
for _ in $(seq 600); do
  [ -s "$OUT/e/terminal.rc" ] && break
  tmux -L beep capture-pane -p >>"$OUT/e/terminal.pane" 2>/dev/null
  sleep 0.2
done
tmux -L beep capture-pane -p >"$OUT/e/terminal.end" 2>/dev/null
tmux -L beep kill-server 2>/dev/null
echo done >"$OUT/done"
