#!/usr/bin/env bash
# Run the whole test suite with the real services it needs: a PulseAudio server with a
# null sink (started here, stopped at the end). Xvfb and tmux are started by the tests
# themselves (private display via -displayfd, private tmux socket).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

pulse_pid=""
if [ -x scripts/start-pulse.sh ]; then
  if env_lines=$(bash scripts/start-pulse.sh); then
    eval "$env_lines"
    pulse_pid=${BEEP_PULSE_PID:-}
  else
    echo "test: could not start PulseAudio (audio tests will fail under CI)" >&2
  fi
fi

"$PY" -m pytest "$@"
rc=$?

if [ -n "$pulse_pid" ] && kill -0 "$pulse_pid" 2>/dev/null; then
  kill "$pulse_pid" 2>/dev/null || true
fi
[ -n "${BEEP_PAREC_PID:-}" ] && kill "$BEEP_PAREC_PID" 2>/dev/null || true
exit $rc
