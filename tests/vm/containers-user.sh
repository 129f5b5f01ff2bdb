# The container stage with rootless Podman, as the normal user (#14), in the guest: run
# by tests/test_guest_containers.py through scripts/vm.sh --user, results in $OUT.
set -u
# one stuck command fails its own checks, not the whole boot: each beep-av is bounded, and
# on the limit SIGABRT makes Python print every thread's stack (faulthandler) to its stderr
export PYTHONFAULTHANDLER=1
beep-av() { timeout -s ABRT -k 10 "${BEEP_LIMIT:-300}" "$(type -P beep-av)" "$@"; }
mkdir -p "$OUT/info" "$OUT/b" "$OUT/c"
id >"$OUT/info/id.txt"
SHOW=(beep-av show --stage container:podman --ram 128M --swap 64M --cache 16M --rate 96M/s
      --output headless --audio off)
VER=$(beep-av --version | awk '{print $2}')
leftovers() {
  { podman ps -aq --filter label=beep-av=1
    podman volume ls -q
    podman images -a --format '{{.Repository}}:{{.Tag}} {{.ID}}' | grep -v "^localhost/beep-av-hog:$VER "
    find /sys/fs/cgroup -name 'libpod-*.scope'
    find /sys/fs/cgroup -name 'beep-av*'; } >"$1" 2>&1
}
run_show() {
  local dir=$1 name=$2; shift 2
  local t=$SECONDS
  "${SHOW[@]}" --record "$OUT/$dir/$name.jsonl" "$@" >"$OUT/$dir/$name.out" 2>"$OUT/$dir/$name.err"
  echo $? >"$OUT/$dir/$name.rc"
  echo $((SECONDS - t)) >"$OUT/$dir/$name.seconds"
  leftovers "$OUT/$dir/$name.left"
}
systemctl --user start podman.socket >"$OUT/info/socket.txt" 2>&1
systemctl --user is-active podman.socket >>"$OUT/info/socket.txt" 2>&1
podman info >"$OUT/info/podman-info.txt" 2>&1
beep-av doctor >"$OUT/info/doctor.txt" 2>&1
# what Podman's own CLI says of an OOM kill (its State.OOMKilled), beside Beep's record
IMG=localhost/beep-av-hog:$VER
oomprobe() {  # oomprobe NAME PODMAN-RUN-ARGS...
  local name=$1; shift
  timeout 120 podman run --name "probe-$name" --network none -m 64m --memory-swap 64m "$@" \
    --entrypoint /usr/bin/python3 "$IMG" -S /hog/entry.py --rate 0 --cache 0 \
    --cache-dir /var/tmp --report-fd 1 --parent 0 >/dev/null 2>"$OUT/info/oom-$name.err"
  echo "rc $? $(podman inspect "probe-$name" --format '{{.State.OOMKilled}} {{.State.ExitCode}}')" \
    >"$OUT/info/oom-$name.txt" 2>&1
  podman rm -f "probe-$name" >/dev/null 2>&1
}

run_show b show1
oomprobe cli  # after show1: the image exists
run_show b show2
run_show c restarts --restarts 2
echo done >"$OUT/done"
