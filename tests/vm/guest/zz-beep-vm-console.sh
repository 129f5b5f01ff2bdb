# /etc/profile.d: under `scripts/vm.sh --console`, tty1's login shell runs the command
# once, on the console as a user would type it, then gives the prompt.
if [ -e /run/beep-vm/console ] && [ "$(tty)" = /dev/tty1 ] && [ ! -e /mnt/ctl/rc ] &&
  [ -z "${BEEP_VM_COMMAND:-}" ]; then
  export OUT=/mnt/out BEEP_VM_COMMAND=1  # the command's own login shell must not run it again
  cut -d' ' -f1 /proc/uptime >/mnt/ctl/started
  # stdin, stdout and stderr stay the console, as for a user typing there
  bash -lc "$(cat /mnt/ctl/cmd)"
  echo $? >/mnt/ctl/rc
fi
