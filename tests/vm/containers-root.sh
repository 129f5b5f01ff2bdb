# The container stage with Docker, as root (#14), in the guest: run by
# tests/test_guest_containers.py through scripts/vm.sh, results in $OUT.
set -u
# one stuck command fails its own checks, not the whole boot: each beep-av is bounded, and
# on the limit SIGABRT makes Python print every thread's stack (faulthandler) to its stderr
export PYTHONFAULTHANDLER=1
beep-av() { timeout -s ABRT -k 10 "${BEEP_LIMIT:-300}" "$(type -P beep-av)" "$@"; }
mkdir -p "$OUT/info" "$OUT/a" "$OUT/c" "$OUT/d" "$OUT/e"
SHOW=(beep-av show --stage container:docker --ram 128M --swap 64M --cache 16M --rate 96M/s
      --output headless --audio off)
VER=$(beep-av --version | awk '{print $2}')
leftovers() {  # containers, image layers and cgroups of ours left after a show
  { docker ps -aq --filter label=beep-av=1
    docker volume ls -q
    docker images -a --format '{{.Repository}}:{{.Tag}} {{.ID}}' | grep -v "^beep-av-hog:$VER "
    find /sys/fs/cgroup -name 'docker-*.scope'
    find /sys/fs/cgroup -name 'beep-av*'; } >"$1" 2>&1
}
run_show() {  # run_show DIR NAME ARGS...
  local dir=$1 name=$2; shift 2
  local t=$SECONDS
  "${SHOW[@]}" --record "$OUT/$dir/$name.jsonl" "$@" >"$OUT/$dir/$name.out" 2>"$OUT/$dir/$name.err"
  echo $? >"$OUT/$dir/$name.rc"
  echo $((SECONDS - t)) >"$OUT/$dir/$name.seconds"
  leftovers "$OUT/$dir/$name.left"
}
for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
docker info >"$OUT/info/docker-info.txt" 2>&1
beep-av doctor >"$OUT/info/doctor.txt" 2>&1
echo "$VER" >"$OUT/info/version.txt"

# a. two shows: the first imports the image, the second reuses it
run_show a show1
run_show a show2
docker images --format '{{.Repository}}:{{.Tag}}' >"$OUT/a/images.txt"

# c. --restarts 2: three lives, three kills
run_show c restarts --restarts 2

# d. watch --containers while an unrelated container is OOM-killed
command beep-av watch --containers --output headless --audio off --record "$OUT/d/watch.jsonl" \
  >"$OUT/d/watch.out" 2>"$OUT/d/watch.err" &
watch=$!
for _ in $(seq 240); do grep -q '^watching' "$OUT/d/watch.err" && break; sleep 0.5; done
sleep 2
# (the guest has AppArmor on but no apparmor_parser: the show says so and runs unconfined)
docker run --name victim -m 64m --memory-swap 64m --network none --entrypoint /usr/bin/python3 \
  --security-opt apparmor=unconfined \
  "beep-av-hog:$VER" -S /hog/entry.py --rate 0 --cache 0 --cache-dir /var/tmp --report-fd 1 \
  --parent 0 >/dev/null 2>"$OUT/d/victim.err"
echo $? >"$OUT/d/victim.rc"
docker inspect victim --format '{{.State.OOMKilled}} {{.State.ExitCode}}' >"$OUT/d/victim.inspect" 2>&1
sleep 5
kill -INT "$watch"
wait "$watch"
echo $? >"$OUT/d/watch.rc"
docker rm -f victim >/dev/null 2>&1

# e. a show killed with SIGKILL mid-climb leaves its container; cleanup removes it
command "${SHOW[@]}" --rate 4M/s --ram 256M >"$OUT/e/crash.out" 2>"$OUT/e/crash.err" &
show=$!
for _ in $(seq 240); do
  grep -q '^stage:' "$OUT/e/crash.err" && break
  kill -0 "$show" 2>/dev/null || break
  sleep 0.5
done
sleep 1
kill -9 "$show"
wait "$show" 2>/dev/null
docker ps -aq --filter label=beep-av=1 >"$OUT/e/before.txt"
beep-av cleanup >"$OUT/e/cleanup.out" 2>&1
echo $? >"$OUT/e/cleanup.rc"
sleep 1
leftovers "$OUT/e/after.left"
echo done >"$OUT/done"
