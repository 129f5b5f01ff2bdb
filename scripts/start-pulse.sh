#!/bin/sh
# Start a real PulseAudio server with a null sink `beep_null` (no sound card needed) and
# print the environment to use it:   eval "$(scripts/start-pulse.sh)"
# Idempotent: a server already answering in our runtime dir is reused.
#   scripts/start-pulse.sh --stop   stops the server and the monitor reader (by pid).
# Why the extra `parec` reader: an idle null sink works in 2-second blocks and a new
# stream stalls 1-2 s unless a low-latency reader is attached (FIELD-NOTES, Sound).
set -eu

RUNDIR="${BEEP_PULSE_DIR:-/tmp/beep-av-pulse-$(id -u)}"
SINK=beep_null
SOCKET="$RUNDIR/pulse/native"

say() { echo "start-pulse: $*" >&2; }

print_env() {
    echo "export XDG_RUNTIME_DIR='$RUNDIR'"
    echo "export PULSE_SERVER='unix:$SOCKET'"
    # pids for a caller that stops things itself (or: start-pulse.sh --stop)
    echo "export BEEP_PULSE_PID='$(cat "$RUNDIR/pulse/pid" 2>/dev/null || true)'"
    echo "export BEEP_PAREC_PID='$(cat "$RUNDIR/parec.pid" 2>/dev/null || true)'"
}

server_up() {
    [ -S "$SOCKET" ] &&
        XDG_RUNTIME_DIR="$RUNDIR" PULSE_SERVER="unix:$SOCKET" pactl info >/dev/null 2>&1
}

stop_pid_file() {
    # end only the process we started, by its recorded pid
    if [ -f "$1" ]; then
        pid=$(cat "$1")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
        rm -f "$1"
    fi
}

if [ "${1:-}" = "--stop" ]; then
    stop_pid_file "$RUNDIR/parec.pid"
    stop_pid_file "$RUNDIR/pulse/pid"
    # the daemon removes its pid file itself; wait for it to let go of the socket
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        server_up || break
        sleep 0.2
    done
    rm -rf "$RUNDIR"
    exit 0
fi

for tool in pulseaudio pactl parec; do
    command -v "$tool" >/dev/null 2>&1 || {
        say "$tool not found (apt-get install pulseaudio pulseaudio-utils libasound2-plugins alsa-utils)"
        exit 3
    }
done

if server_up; then
    reader_ok=0
    if [ -f "$RUNDIR/parec.pid" ] && kill -0 "$(cat "$RUNDIR/parec.pid")" 2>/dev/null; then
        reader_ok=1
    fi
    if [ "$reader_ok" = 1 ]; then
        print_env
        exit 0
    fi
else
    # a stale dir from a crashed run: a fresh, private runtime dir
    if [ -e "$RUNDIR" ]; then
        stop_pid_file "$RUNDIR/parec.pid"
        stop_pid_file "$RUNDIR/pulse/pid"
        rm -rf "$RUNDIR"
    fi
    mkdir -m 0700 "$RUNDIR"
    # warnings about root and D-Bus are harmless; keep them out of the eval'd stdout
    XDG_RUNTIME_DIR="$RUNDIR" pulseaudio -n --daemonize=yes --exit-idle-time=-1 \
        --log-target=file:"$RUNDIR/pulse.log" \
        -L module-native-protocol-unix \
        -L "module-null-sink sink_name=$SINK rate=48000 channels=2" >/dev/null 2>&1 || {
        say "pulseaudio failed to start (see $RUNDIR/pulse.log)"
        exit 3
    }
    for _ in $(seq 1 50); do
        server_up && break
        sleep 0.1
    done
    server_up || {
        say "pulseaudio did not answer on $SOCKET"
        exit 3
    }
fi

export XDG_RUNTIME_DIR="$RUNDIR" PULSE_SERVER="unix:$SOCKET"
pactl set-default-sink "$SINK"
# the low-latency reader that keeps the null sink ticking in small blocks
nohup parec --latency-msec=10 -d "$SINK.monitor" >/dev/null 2>&1 </dev/null &
echo $! >"$RUNDIR/parec.pid"
sleep 2
print_env
