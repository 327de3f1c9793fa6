#!/usr/bin/env bash
# Checks a release bundle the way an operator and a packager would (run by
# tests/run.sh after packaging/release.sh). Needs root.
#
#   packaging/check.sh DIST MINISIGN_PUBLIC_KEY
#
#  1. the sums and the minisign signature verify;
#  2. the .deb is lintian-clean (no errors, no warnings);
#  3. the SBOM lists the crates linked into the binary, each with version,
#     license and hash, and no proc-macro or dev-only crate;
#  4. the .deb installs with dpkg -i in a debootstrapped bookworm root, and
#     `sandbox --version` and `sandbox doctor` run there;
#  5. the binary from the tarball runs in a bullseye root (glibc 2.31);
#  6. the vendored source tarball, unpacked in another directory, builds
#     the shipped binary bit for bit with the network unplugged.
#
# The roots are debootstrapped once and cached (packaging/roots.sh); each
# run works on an overlay of them inside its own mount and network
# namespace, so the cache stays pristine and nothing reaches the network.
# Environment: SANDBOX_TEST_CACHE, DEBIAN_MIRROR (see roots.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$(realpath "${1:?usage: packaging/check.sh DIST PUBKEY}")
PUBKEY=$(realpath "${2:?usage: packaging/check.sh DIST PUBKEY}")

T0=$SECONDS
stamp() { printf '[check %4ds] %s\n' $((SECONDS - T0)) "$*"; }
show() { printf '    %s\n' "${1//$'\n'/$'\n'    }"; }
die() {
  printf 'check.sh: FAIL: %s\n' "$*" >&2
  exit 1
}
[[ $(id -u) -eq 0 ]] || die "needs root (chroot, overlay mounts, unshare)"
# shellcheck source=/dev/null
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
# cargo-auditable where release.sh installed it.
export PATH=${CARGO_TOOLS:-${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}/tools}/bin:$PATH
for tool in minisign lintian jq debootstrap unshare chroot; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

WORK=$(mktemp -d /var/tmp/sandbox-check.XXXXXX)
export WORK
trap 'rm -rf "$WORK"' EXIT

shopt -s nullglob
debs=("$DIST"/sandbox_*_amd64.deb)
bins=("$DIST"/sandbox-*-x86_64-linux.tar.gz)
srcs=("$DIST"/sandbox-*-vendored.tar.gz)
sboms=("$DIST"/sandbox-*.cdx.json)
((${#debs[@]} == 1 && ${#bins[@]} == 1 && ${#srcs[@]} == 1 && ${#sboms[@]} == 1)) ||
  die "$DIST must hold exactly one .deb, binary tarball, source tarball and SBOM"

stamp "1. sha256sum -c and the signature"
(cd "$DIST" && sha256sum --strict -c SHA256SUMS) || die "a sum does not match"
minisign -V -q -p "$PUBKEY" -m "$DIST/SHA256SUMS" -x "$DIST/SHA256SUMS.minisig" || die "the signature does not verify"
for f in "$DIST"/*; do
  case ${f##*/} in SHA256SUMS | SHA256SUMS.minisig) continue ;; esac
  grep -qF "  ${f##*/}" "$DIST/SHA256SUMS" || die "${f##*/} is not in SHA256SUMS"
done

stamp "2. lintian"
lintian --fail-on error,warning --tag-display-limit 0 "${debs[0]}" || die "lintian is not clean"
[[ $(dpkg-deb -f "${debs[0]}" Package) == sandbox ]] || die "wrong package name"
dpkg-deb -c "${debs[0]}" | grep -q 'sandbox-probe' && die "the .deb ships sandbox-probe"
tar -tzf "${bins[0]}" | grep -q 'sandbox-probe' && die "the tarball ships sandbox-probe"

stamp "3. SBOM"
jq -e '.bomFormat == "CycloneDX" and (.components | length) > 50
  and all(.components[]; .version and .purl and (.licenses | length) > 0 and (.hashes[0].content | length) == 64)' \
  "${sboms[0]}" >/dev/null || die "the SBOM lacks components, versions, licenses or hashes"
for crate in clap nix zbus nftables rtnetlink serde_json; do
  jq -e --arg c "$crate" 'any(.components[]; .name == $c)' "${sboms[0]}" >/dev/null || die "the SBOM lacks $crate"
done
for crate in regorus tempfile; do
  jq -e --arg c "$crate" 'any(.components[]; .name == $c) | not' "${sboms[0]}" >/dev/null ||
    die "the SBOM lists the dev-dependency $crate"
done
# Only what is linked in: no proc-macro (they run in the compiler), and not
# rand_core 0.10, which only a dev-dependency's features pull in.
for crate in serde_derive clap_derive thiserror-impl async-trait zbus_macros zerocopy-derive; do
  jq -e --arg c "$crate" 'any(.components[]; .name == $c) | not' "${sboms[0]}" >/dev/null ||
    die "the SBOM lists the proc-macro $crate, which is not in the binary"
done
jq -e 'any(.components[]; .name == "rand_core" and (.version | startswith("0.10."))) | not' "${sboms[0]}" >/dev/null ||
  die "the SBOM lists rand_core 0.10, which only a dev-dependency enables"
serde=$(jq -c '.components[] | select(.name == "serde")' "${sboms[0]}")
jq -e --arg v "$(sed -n '/^name = "serde"$/{n;s/^version = "\(.*\)"$/\1/p}' Cargo.lock)" \
  '.version == $v and .licenses[0].expression == "MIT OR Apache-2.0" and (.hashes[0].content | test("^[0-9a-f]{64}$"))' \
  <<<"$serde" >/dev/null || die "serde is not in the SBOM with Cargo.lock's version, its license and a hash: $serde"
show "$(jq -r '"\(.components | length) crates linked in; e.g. " + (.components[] | select(.name == "serde") | "\(.name) \(.version) \(.licenses[0].expression) sha256:\(.hashes[0].content[:16])…")' "${sboms[0]}")"

# run_in SUITE PACKAGES SCRIPT: SCRIPT runs (bash) with $R an overlay of the
# cached SUITE root, in a private mount and network namespace, /proc mounted.
run_in() {
  local base
  base=$(packaging/roots.sh "$1" "$2")
  local w=$WORK/$1
  mkdir -p "$w/up" "$w/work" "$w/root"
  # shellcheck disable=SC2016 # expanded by the inner bash
  unshare --mount --net --fork -- bash -euo pipefail -c '
    mount --make-rprivate /
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/up,workdir=$2/work" "$2/root"
    mount -t proc proc "$2/root/proc"
    R=$2/root
    export R
    eval "$3"
  ' run_in "$base" "$w" "$3"
}

stamp "4. dpkg -i in a bookworm root; sandbox --version, sandbox doctor"
cp "${debs[0]}" "$WORK/sandbox.deb"
# shellcheck disable=SC2016 # expanded by run_in's bash
out=$(run_in bookworm nftables,iproute2 '
  cp "$WORK/sandbox.deb" "$R/tmp/sandbox.deb"
  chroot "$R" dpkg -i /tmp/sandbox.deb >/dev/null
  chroot "$R" dpkg -s sandbox | grep -q "^Status: install ok installed"
  test -f "$R/usr/share/man/man8/sandbox.8.gz"
  test -f "$R/usr/share/bash-completion/completions/sandbox"
  chroot "$R" /usr/sbin/sandbox --version
  rc=0
  chroot "$R" /usr/sbin/sandbox doctor --no-systemd || rc=$?
  echo "doctor exit $rc"
') || die "the .deb did not install or run in bookworm:
$out"
show "$out"
grep -q '^sandbox 0' <<<"$out" || die "no version from sandbox --version in bookworm"
grep -q '^ok    nft ' <<<"$out" || die "doctor did not find the nft the package depends on"
# No OpenClaw in that root: doctor must say so and exit 3.
if ! grep -q '^FAIL  openclaw ' <<<"$out" || ! grep -q '^doctor exit 3$' <<<"$out"; then
  die "doctor did not report the missing OpenClaw with exit 3"
fi

stamp "5. the binary tarball's sandbox in a bullseye root (glibc 2.31)"
mkdir -p "$WORK/bin"
tar -xzf "${bins[0]}" -C "$WORK/bin" --strip-components=1
# shellcheck disable=SC2016 # expanded by run_in's bash
out=$(run_in bullseye "" '
  cp "$WORK/bin/sandbox" "$R/usr/local/sbin/sandbox"
  chroot "$R" ldd --version | sed -n 1p
  chroot "$R" /usr/local/sbin/sandbox --version
  rc=0
  chroot "$R" /usr/local/sbin/sandbox doctor --no-systemd || rc=$?
  echo "doctor exit $rc"
  mkdir -p "$R/tmp/plan-root"
  chroot "$R" /usr/local/sbin/sandbox plan --root /tmp/plan-root --no-systemd --dns 192.0.2.53 --format json >/dev/null
  # Without --root: root is looked up through the static glibc NSS.
  chroot "$R" /usr/local/sbin/sandbox plan --no-systemd --dns 192.0.2.53 --sidecar-user root --format json 2>&1 >/dev/null |
    { ! grep "sidecar user root"; }
  echo "plan ok"
') || die "the binary does not run in bullseye:
$out"
show "$out"
grep -q '^sandbox 0' <<<"$out" || die "no version from sandbox --version in bullseye"
# bullseye's minbase has no nftables: doctor reports it.
grep -q '^FAIL  nft ' <<<"$out" || die "doctor did not report the missing nft in bullseye"
grep -q '^plan ok$' <<<"$out" || die "sandbox plan failed in bullseye"

stamp "6. the source tarball rebuilds the shipped binary bit for bit, elsewhere, offline"
want=$(sha256sum "$WORK/bin/sandbox" | cut -d' ' -f1)
other=$WORK/a/different/place
mkdir -p "$other"
tar -xzf "${srcs[0]}" -C "$other"
src=("$other"/sandbox-*)
bin=$(unshare --net -- "${src[0]}/packaging/build-binary.sh") || die "the offline build failed"
got=$(sha256sum "$bin" | cut -d' ' -f1)
[[ $got == "$want" ]] || die "rebuilt in $other: $got, shipped: $want (not reproducible)"
echo "    $want  rebuilt in ${src[0]} = shipped"
stamp "all checks passed ($ROOT)"
