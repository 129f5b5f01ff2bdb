#!/usr/bin/env bash
# Build, or reuse from the cache, the Debian guest image of the test bed (scripts/vm.sh):
# Debian 12 with systemd, logind, a normal user (beep, uid 1000) whose user manager runs
# from boot, zram-tools and systemd-oomd (both off until a test starts them), Mesa's
# KMS libraries and ALSA, and Beep's wheel with its dependencies installed offline into
# /opt/beep-av (`beep-av` on PATH for root and the user; the wheelhouse stays in
# /opt/wheelhouse for a fresh venv). Prints the image directory (rootfs.img, vmlinuz,
# initrd.img) on stdout; progress goes to stderr.
#
# Two cached layers under $BEEP_VM_CACHE (default /var/cache/beep-av-vm), outside the
# checkout: the Debian base (mmdebstrap, ~2.5 min), keyed by tests/vm/packages.txt; and
# the image (base + wheel + guest files, ~1 min), keyed by the project's sources, so an
# unchanged tree only boots.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${BEEP_VM_CACHE:-/var/cache/beep-av-vm}
SUITE=bookworm
MIRROR=${BEEP_VM_MIRROR:-http://deb.debian.org/debian}
BASE_RECIPE=1   # bump when the base's recipe (not its package list) changes
IMG_SIZE=4G

say() { echo "vm-image: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "vm-image: building the guest image needs root" >&2; exit 3; }
for tool in mmdebstrap mkfs.ext4 chroot; do
  command -v "$tool" >/dev/null || { echo "vm-image: $tool not found (make setup installs it)" >&2; exit 3; }
done
mkdir -p "$CACHE"
exec 8>"$CACHE/.build.lock"
flock 8

hash() { sha256sum | cut -c1-16; }
pkgs=$(sed 's/#.*//' tests/vm/packages.txt | xargs | tr ' ' ,)
base_key=$( { echo "$SUITE $BASE_RECIPE"; echo "$pkgs"; } | hash)
base="$CACHE/base-$base_key.tar"
src_key=$(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --exclude=__pycache__ --exclude='*.pyc' -cf - \
  pyproject.toml README.md beep_av assets tests/vm/guest scripts/vm-image.sh | hash)
img="$CACHE/img-$base_key-$src_key"

if [ -s "$img/rootfs.img" ]; then
  say "cached image $img"
  echo "$img"
  exit 0
fi

work=$(mktemp -d "$CACHE/work.XXXXXX")
R="$work/root"
cleanup() {
  for m in dev/pts dev proc sys; do mountpoint -q "$R/$m" 2>/dev/null && umount -l "$R/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

t_start=$SECONDS
if [ ! -s "$base" ]; then
  say "building the Debian base ($SUITE, $(echo "$pkgs" | tr , '\n' | wc -l) packages; ~2.5 min)"
  mmdebstrap --quiet --variant=minbase --include="$pkgs" "$SUITE" "$work/base.tar" "$MIRROR" >&2
  mv "$work/base.tar" "$base"
  say "base done in $((SECONDS - t_start)) s"
fi

say "the wheel and its dependencies (wheelhouse for an offline install)"
PYBIN=python3
[ -x .venv/bin/python ] && PYBIN=.venv/bin/python
# the project's own wheel from this tree, and its dependencies from the package index
# from a copy: a build in the checkout leaves build/ behind, whose stale files can land in
# later wheels
mkdir "$work/src"
cp -r pyproject.toml README.md beep_av assets "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
if ! env -u PIP_FIND_LINKS "$PYBIN" -m pip wheel -q --wheel-dir "$work/wheelhouse" "$work/src" >"$work/pip.log" 2>&1; then
  cat "$work/pip.log" >&2
  exit 1
fi

say "unpacking the base and installing Beep"
mkdir "$R"
tar -xpf "$base" -C "$R"
mount --bind /proc "$R/proc"
mount --bind /sys "$R/sys"
mount --bind /dev "$R/dev"
cp -r "$work/wheelhouse" "$R/opt/wheelhouse"
in_root() { chroot "$R" env -u PIP_FIND_LINKS -u PIP_CERT PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
in_root python3 -m venv /opt/beep-av
in_root /opt/beep-av/bin/pip install -q --no-index --find-links /opt/wheelhouse beep-av >&2
ln -sf /opt/beep-av/bin/beep-av "$R/usr/local/bin/beep-av"

say "the guest's user, units and settings"
# adm as on Ubuntu's first user: the kernel's records in the journal (dmesg_restrict
# keeps /dev/kmsg root's)
groups=$(for g in adm audio video render input; do in_root getent group "$g" >/dev/null && echo -n "$g,"; done)
in_root useradd -m -u 1000 -s /bin/bash ${groups:+-G "${groups%,}"} beep
mkdir -p "$R/var/lib/systemd/linger"
touch "$R/var/lib/systemd/linger/beep"   # user@1000.service (the user manager) runs from boot
echo beep-guest > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 beep-guest\n' > "$R/etc/hosts"
install -m 0755 tests/vm/guest/beep-vm-run "$R/usr/local/sbin/beep-vm-run"
install -m 0755 tests/vm/guest/beep-vm-shot "$R/usr/local/bin/beep-vm-shot"
install -m 0644 tests/vm/guest/*.service "$R/etc/systemd/system/"
install -m 0644 tests/vm/guest/zz-beep-vm-console.sh "$R/etc/profile.d/"
for unit in tests/vm/guest/*.service; do
  ln -sf "/etc/systemd/system/$(basename "$unit")" "$R/etc/systemd/system/multi-user.target.wants/"
done
# started only by the tests that want them; and nothing that slows a TCG boot
for unit in zramswap.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer; do
  in_root systemctl disable "$unit" >/dev/null 2>&1 || true
done
# systemd-oomd is socket- and D-Bus-activated as well: masked, the test that wants it
# unmasks it
in_root systemctl mask systemd-oomd.service systemd-oomd.socket >/dev/null 2>&1 || true
in_root systemctl mask serial-getty@ttyS0.service >/dev/null 2>&1 || true
echo 'kernel.printk = 3 4 1 3' > "$R/etc/sysctl.d/10-beep-console.conf"
# container engines (#14), no network in the guest: dockerd without a bridge or iptables;
# rootless podman for the user (subordinate ids, its API socket in the user manager)
install -d -m 0755 "$R/etc/docker"
install -m 0644 tests/vm/guest/docker-daemon.json "$R/etc/docker/daemon.json"
for f in subuid subgid; do
  grep -q '^beep:' "$R/etc/$f" 2>/dev/null || echo 'beep:100000:65536' >> "$R/etc/$f"
done
in_root systemctl enable docker.service >/dev/null 2>&1 || true
in_root systemctl --global enable podman.socket >/dev/null 2>&1 || true
# PipeWire (#25): not in every session (it would take the card from the console tests);
# tests/vm/laptop-user.sh starts it as a desktop session does
for unit in pipewire.socket pipewire.service pipewire-pulse.socket pipewire-pulse.service \
  wireplumber.service filter-chain.service; do
  in_root systemctl --global disable "$unit" >/dev/null 2>&1 || true
done

for m in dev proc sys; do umount -l "$R/$m"; done
cp "$(ls "$R"/boot/vmlinuz-* | sort -V | tail -n 1)" "$work/vmlinuz"
cp "$(ls "$R"/boot/initrd.img-* | sort -V | tail -n 1)" "$work/initrd.img"
say "making the ext4 image ($IMG_SIZE, sparse)"
mkfs.ext4 -q -F -L beep-root -d "$R" "$work/rootfs.img" "$IMG_SIZE" >&2
mkdir "$work/img"
mv "$work/rootfs.img" "$work/vmlinuz" "$work/initrd.img" "$work/img/"
mv "$work/img" "$img"
say "image done in $((SECONDS - t_start)) s: $img"

# keep the newest two images and the current base; older ones are only disk
ls -dt "$CACHE"/img-* 2>/dev/null | tail -n +3 | xargs -r rm -rf
ls -d "$CACHE"/base-*.tar 2>/dev/null | { grep -v "base-$base_key.tar" || true; } | xargs -r rm -f
echo "$img"
