# The laptop as root (`sudo` from a terminal: a login shell in a logind session scope),
# in the guest: run by tests/test_guest_laptop.py through scripts/vm.sh, results in $OUT.
set -u
# one stuck command fails its own checks, not the whole boot: each beep-av is bounded, and
# on the limit SIGABRT makes Python print every thread's stack (faulthandler) to its stderr
export PYTHONFAULTHANDLER=1
beep-av() { timeout -s ABRT -k 10 "${BEEP_LIMIT:-300}" "$(type -P beep-av)" "$@"; }
SHOW=(beep-av show --ram 128M --cache 32M --rate 96M/s --output headless --audio off)
leftovers() {  # anything of ours left in the cgroup tree, the unit list or swap
  { find /sys/fs/cgroup -name 'beep-av*'
    systemctl list-units --all --no-legend 'beep-av*'
    grep beep-av /proc/swaps
    ls -d /var/tmp/beep-av-swap-* 2>/dev/null; } >"$1" 2>/dev/null
}
run_show() {  # run_show DIR NAME ARGS...: a show, its output, status and leftovers
  local dir=$1 name=$2; shift 2
  mkdir -p "$OUT/$dir"
  "${SHOW[@]}" --record "$OUT/$dir/$name.jsonl" "$@" >"$OUT/$dir/$name.out" 2>"$OUT/$dir/$name.err"
  echo $? >"$OUT/$dir/$name.rc"
  leftovers "$OUT/$dir/$name.left"
}
mkdir -p "$OUT/info"
cat /proc/self/cgroup >"$OUT/info/cgroup.txt"
cut -d' ' -f1 /proc/uptime >"$OUT/info/uptime.txt"
beep-av doctor >"$OUT/info/doctor.txt" 2>&1

# a. sudo on cgroup v2: five shows with the guest's swap, one with a temporary swapfile
for i in 1 2 3 4 5; do run_show a "show$i" --swap 64M; done
swapoff /swapfile
run_show a swapfile --swap 64M
swapon /swapfile

# c. zram only: zram-tools' swap, the hog's pages must not compress
swapoff -a
systemctl start zramswap.service
swapon --show --bytes >"$OUT/info/zram-swaps.txt"
mkdir -p "$OUT/c"
( while :; do cat /sys/block/zram0/mm_stat; sleep 0.02; done ) >"$OUT/c/mm_stat.txt" 2>/dev/null &
sampler=$!
run_show c zram --swap 192M
kill "$sampler"
systemctl stop zramswap.service
swapon /swapfile

# d. systemd-oomd active with Debian's policies (user@.service pressure, -.slice swap 90%)
systemctl unmask -q systemd-oomd.service systemd-oomd.socket
systemctl start systemd-oomd.service
sleep 1
mkdir -p "$OUT/d"
systemctl is-active systemd-oomd.service >"$OUT/d/active.txt"
beep-av doctor >"$OUT/d/doctor.txt" 2>&1
run_show d oomd --swap 64M
# swap nearly all in the stage: the root slice's 90% swap policy would pick the stage
swapoff /swapfile
fallocate -l 80M /swap-small && chmod 600 /swap-small && mkswap -q /swap-small && swapon /swap-small
run_show d oomd-swapfull --swap 76M
swapoff /swap-small; rm -f /swap-small; swapon /swapfile
journalctl -b -u systemd-oomd.service -o short-monotonic --no-pager >"$OUT/d/journal.txt" 2>&1
# the freeze ended by systemd-oomd itself (issue 23): the scope watched with
# ManagedOOMMemoryPressure=kill and a 20% limit; oomd waits out its duration, then kills
beep-av show --act freeze --killer systemd-oomd --ram 128M --swap 256M --calm 0.3 \
  --output headless --audio off --record "$OUT/d/freeze-oomd.jsonl" \
  >"$OUT/d/freeze-oomd.out" 2>"$OUT/d/freeze-oomd.err"
echo $? >"$OUT/d/freeze-oomd.rc"
leftovers "$OUT/d/freeze-oomd.left"
journalctl -b -u systemd-oomd.service -o short-monotonic --no-pager >"$OUT/d/journal-freeze.txt" 2>&1
systemctl stop systemd-oomd.service
# e. the throttle act on cgroup v2 (issue 15): a systemd scope's cpu.max lowered step by
#    step, the workers' rate measured, nobody killed, the closing sound in a wav
mkdir -p "$OUT/e"
beep-av show --act throttle --output headless --audio "wav:$OUT/e/throttle.wav" \
  --record "$OUT/e/throttle.jsonl" >"$OUT/e/throttle.out" 2>"$OUT/e/throttle.err"
echo $? >"$OUT/e/throttle.rc"
leftovers "$OUT/e/throttle.left"
# f. who-dies and the bystander on cgroup v2 (issue 15): in a systemd scope with the
#    guest's swap, as the throttle act above; the bystander's read-back in a wav
mkdir -p "$OUT/f"
for i in 1 2; do
  beep-av show --act who-dies --ram 128M --cache 32M --rate 96M/s --calm 0.5 --output headless \
    --audio off --record "$OUT/f/who$i.jsonl" >"$OUT/f/who$i.out" 2>"$OUT/f/who$i.err"
  echo $? >"$OUT/f/who$i.rc"
  leftovers "$OUT/f/who$i.left"
done
beep-av show --act bystander --ram 128M --swap 64M --cache 32M --rate 96M/s --calm 0.3 \
  --output headless --audio "wav:$OUT/f/bystander.wav" --record "$OUT/f/bystander.jsonl" \
  >"$OUT/f/bystander.out" 2>"$OUT/f/bystander.err"
echo $? >"$OUT/f/bystander.rc"
leftovers "$OUT/f/bystander.left"
# g. the acts that slow instead of kill (issue 23): the freeze, ended by Beep's kernel PSI
#    trigger on the scope's own memory.pressure; memory.high holding a climbing hog
mkdir -p "$OUT/g"
beep-av show --act freeze --ram 128M --swap 256M --calm 0.3 --output headless --audio off \
  --record "$OUT/g/freeze.jsonl" >"$OUT/g/freeze.out" 2>"$OUT/g/freeze.err"
echo $? >"$OUT/g/freeze.rc"
leftovers "$OUT/g/freeze.left"
beep-av show --act high --ram 256M --rate 64M/s --calm 0.3 --output headless \
  --audio "wav:$OUT/g/high.wav" --record "$OUT/g/high.jsonl" >"$OUT/g/high.out" 2>"$OUT/g/high.err"
echo $? >"$OUT/g/high.rc"
leftovers "$OUT/g/high.left"
echo done >"$OUT/done"
