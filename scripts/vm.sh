#!/usr/bin/env bash
# The guest test bed: boot the Debian guest (scripts/vm-image.sh) under QEMU, run one
# shell command in it, power off, and exit with the command's status.
#
#   VM_OUT=DIR scripts/vm.sh [--user] [--console] [--shots T1,T2,...] [--timeout S] -- 'COMMAND'
#
# The command runs with `bash -lc` in a logind session: as root from a login shell (as
# `sudo` from a terminal would), or with --user as the normal user `beep` (uid 1000) with
# their systemd user manager running, or with --console on tty1 in that user's seat
# session. $OUT in the guest is DIR on the host. DIR gets serial.log (the guest's
# console), shot-T.png (screendumps T seconds after the command starts) and card.wav
# (what the guest's sound card played). The command's stdout and stderr come out here.
# In the guest, `beep-vm-shot NAME` asks for a screendump now ($VM_OUT/shot-NAME.png).
#
# The guest: 2 vCPUs, 2 GiB, no network, a std VGA (bochs-drm: /dev/dri/card0, /dev/fb0),
# an Intel HDA sound card. KVM only where hardware virtualisation really works, else
# TCG. One guest at a time on this machine (a lock), never beside another heavy test.
# Exit codes: the command's; 124 the guest timed out; 125 the bed itself failed.
set -uo pipefail
# the whole script is read before it runs (a { } block): editing it mid-run is then safe
{
cd "$(dirname "$0")/.."

mode=root
shots=""
timeout=${VM_TIMEOUT:-1200}
while [ $# -gt 0 ]; do
  case "$1" in
    --user) mode=user ;;
    --console) mode=console ;;
    --shots) shots=$2; shift ;;
    --shots=*) shots=${1#--shots=} ;;
    --timeout) timeout=$2; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "vm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ $# -ge 1 ] || { echo "vm.sh: no command (usage: VM_OUT=DIR scripts/vm.sh [--user] -- 'COMMAND')" >&2; exit 2; }
command=$*
[ -n "${VM_OUT:-}" ] || { echo "vm.sh: set VM_OUT=DIR (the guest's \$OUT)" >&2; exit 2; }
mkdir -p "$VM_OUT" || exit 125
out=$(cd "$VM_OUT" && pwd)
chmod 0777 "$out"   # the guest's user writes here through 9p

img=$(bash scripts/vm-image.sh) || { echo "vm.sh: no guest image" >&2; exit 125; }

# one guest (or heavy test) at a time on this machine
exec 9>/var/lock/beep-av-heavy.lock
if ! flock -n 9; then
  echo "vm.sh: waiting for another guest or heavy test to finish" >&2
  flock 9
fi

run=$(mktemp -d /tmp/beep-vm.XXXXXX)
ctl="$run/ctl"
mkdir -p "$ctl"
chmod 0777 "$ctl"
printf '%s\n' "$command" >"$ctl/cmd"
echo "$mode" >"$ctl/mode"
hold=0  # seconds after the command's start the guest stays up for the last screendump
for t in ${shots//,/ }; do hold=$(python3 -c "print(max($hold, $t + 2))"); done
echo "$hold" >"$ctl/hold"
qemu_pid=""
finish() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  rm -rf "$run"
}
trap finish EXIT
trap 'exit 130' INT TERM HUP

qemu-img create -q -f qcow2 -F raw -b "$img/rootfs.img" "$run/disk.qcow2" || exit 125

accel=(-accel tcg -cpu max)
# /dev/kvm may open on a nested host that cannot run a guest at speed (kvm_pvm):
# trust it only with the vendor module loaded and vmx/svm in the CPU flags
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } &&
  grep -qwE 'vmx|svm' /proc/cpuinfo; then
  accel=(-accel kvm -cpu host)
fi

rm -f "$out/serial.log" "$out/card.wav" "$out"/shot-*.png
console="console=ttyS0"
# the console's own VT takes kernel messages too: a picture must hold them back
[ "$mode" = console ] && console="console=tty0 console=ttyS0"
t_boot=$SECONDS
qemu-system-x86_64 "${accel[@]}" -smp 2 -m 2G -nodefaults -no-reboot \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
  -append "root=/dev/vda rw $console quiet loglevel=3 systemd.show_status=auto" \
  -drive "file=$run/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
  -virtfs "local,path=$ctl,mount_tag=ctl,security_model=none,id=ctl" \
  -virtfs "local,path=$out,mount_tag=out,security_model=none,id=out" \
  -serial "file:$out/serial.log" -display none -vga std \
  -audiodev "wav,id=snd0,path=$out/card.wav" -device intel-hda -device hda-output,audiodev=snd0 \
  -monitor "unix:$run/monitor.sock,server,nowait" \
  -nic none &
qemu_pid=$!

# screendumps through the QEMU monitor: T seconds after the command starts (--shots), and
# whenever the guest asks (`beep-vm-shot NAME` writes ctl/shot-req.NAME)
shoot() {  # shoot NAME
  local ppm="$run/shot-$1.ppm"
  python3 - "$run/monitor.sock" "$ppm" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
def prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        chunk = s.recv(4096)
        if not chunk:
            return
        buf += chunk
prompt()
s.sendall(b"screendump %s\n" % sys.argv[2].encode())
prompt()
PY
  [ -s "$ppm" ] && /usr/bin/convert "$ppm" "$out/shot-$1.png" 2>/dev/null
  rm -f "$ppm"
}
shot_list=()
[ -n "$shots" ] && IFS=, read -ra shot_list <<<"$shots"

deadline=$((SECONDS + timeout))
started=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -z "$started" ] && [ -s "$ctl/started" ]; then
    started=$SECONDS
    echo "vm.sh: guest up in $((SECONDS - t_boot)) s, running the command ($mode)" >&2
    for t in "${shot_list[@]}"; do
      (sleep "$t"; shoot "$t") &
    done
  fi
  for req in "$ctl"/shot-req.*; do
    [ -e "$req" ] || continue
    name=${req##*/shot-req.}
    rm -f "$req"
    shoot "$name"
  done
  if [ $SECONDS -ge $deadline ]; then
    echo "vm.sh: the guest did not finish in ${timeout} s (see $out/serial.log)" >&2
    cat "$ctl/stdout" 2>/dev/null
    cat "$ctl/stderr" >&2 2>/dev/null
    exit 124
  fi
  sleep 0.1
done
wait "$qemu_pid"
qemu_pid=""
wait  # the shots
cat "$ctl/stdout" 2>/dev/null
cat "$ctl/stderr" >&2 2>/dev/null
if [ ! -s "$ctl/rc" ]; then
  echo "vm.sh: the guest stopped without running the command to its end (see $out/serial.log)" >&2
  tail -n 20 "$out/serial.log" >&2
  exit 125
fi
echo "vm.sh: done in $((SECONDS - t_boot)) s (command $((SECONDS - ${started:-$SECONDS})) s)" >&2
exit "$(cat "$ctl/rc")"
}
