# The console, for real: tty1 in the normal user's seat session (scripts/vm.sh --console),
# a bochs-drm GPU (/dev/dri/card0, /dev/fb0), an Intel HDA card, no sound server.
# Run by tests/test_guest_console.py; results in $OUT, screendumps asked for by name.
set -u
mkdir -p "$OUT/info"
vtmode() {  # the VT's mode now: 0 text, 1 graphics
  python3 -c 'import fcntl, struct; print(struct.unpack("i", fcntl.ioctl(0, 0x4B3B, b"\0" * 4))[0])'
}
tty >"$OUT/info/tty.txt"
loginctl show-session "$XDG_SESSION_ID" -p Seat -p VTNr -p Active -p Type >"$OUT/info/session.txt"
beep-av doctor >"$OUT/info/doctor.txt" 2>&1
script -qc 'beep-av doctor' /dev/null >"$OUT/info/doctor-pty.txt" 2>&1  # a pseudo-terminal, as over SSH
STAGE=(--ram 128M --swap 64M --cache 32M --rate 32M/s)  # a swapping act of a few seconds under TCG
show() {  # show NAME ARGS...: a show on this console, shots at its phases
  local name=$1; shift
  rm -f "$OUT/$name.jsonl"
  beep-vm-shot --on-phase "$OUT/$name.jsonl" swapping "$name-swapping" 0.1 &
  beep-vm-shot --on-phase "$OUT/$name.jsonl" swapping "$name-swapping2" 0.6 &
  beep-vm-shot --on-phase "$OUT/$name.jsonl" finale "$name-finale" 0.3 &
  beep-av show "${STAGE[@]}" --record "$OUT/$name.jsonl" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  echo $? >"$OUT/$name.rc"
  vtmode >"$OUT/$name.vtmode"
  sleep 1
  kill $(jobs -p) 2>/dev/null  # shots of phases the show never reached
  wait
  clear
  echo "prompt-after-$name"
  sleep 1.5
  beep-vm-shot "$name-after"
  sleep 1.5
}
# KMS with the sound card (the only show that plays: card.wav holds its sound alone)
show kms --output kms --audio auto --beep-freq 1000 --beep-length 600
show fb --output framebuffer --audio off
show auto --output auto --audio off
# the other endings: q (a key plan), SIGTERM
show fb-q --output framebuffer --audio off --keys 9:q
beep-av show "${STAGE[@]}" --output kms --audio off >"$OUT/kms-term.out" 2>"$OUT/kms-term.err" &
pid=$!
sleep 12
kill -TERM "$pid"
wait "$pid"
echo $? >"$OUT/kms-term.rc"
vtmode >"$OUT/kms-term.vtmode"
clear
echo "prompt-after-kms-term"
sleep 1.5
beep-vm-shot kms-term-after
sleep 1.5
# --look raw: kernel bytes straight to the screen (a rehearsal: nothing to stage)
beep-vm-shot --on-phase "$OUT/raw.jsonl" swapping raw-swapping 0.3 &
beep-av rehearse "${STAGE[@]}" --output framebuffer --audio off --look raw --record "$OUT/raw.jsonl" \
  >"$OUT/raw.out" 2>"$OUT/raw.err"
echo $? >"$OUT/raw.rc"
kill $(jobs -p) 2>/dev/null
wait
echo done >"$OUT/done"
