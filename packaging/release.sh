#!/usr/bin/env bash
# The release command (README, "Release and offline install"). From a clean
# checkout, with the vendored sources present, it runs offline and writes
# dist/:
#
#   sandbox-V-vendored.tar.gz       the source with every crate vendored; builds
#                                   the same binary bit for bit, network unplugged
#   sandbox-V-x86_64-linux.tar.gz   the binary (static, stripped, cargo auditable),
#                                   man page, completions, README, LICENSE
#   sandbox_V_amd64.deb             /usr/sbin/sandbox, man page, completions
#   sandbox-V.cdx.json              CycloneDX SBOM of the crates in the binary
#   SHA256SUMS, SHA256SUMS.minisig  sums of the above, signed with minisign
#
#   packaging/release.sh                      # sign with $MINISIGN_KEY
#   MINISIGN_KEY=/media/key/sandbox.key packaging/release.sh
#
# Environment:
#   MINISIGN_KEY        the minisign secret key (required; prompts for its
#                       password unless it has none)
#   SANDBOX_VENDOR_DIR  vendored crates (default ./vendor); made with
#                       `cargo vendor` when missing or stale (needs the
#                       registry: the one online step)
#   CARGO_TOOLS         where cargo-auditable is installed and cached
#                       (default ${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}/tools)
#   MAINTAINER          the .deb's Maintainer field (default: the project's
#                       maintainers; a site rebuilding the package sets its own)
#   DIST                output directory (default ./dist)
#   ALLOW_DIRTY=1       release a checkout with uncommitted changes (they
#                       are NOT in the tarballs: only HEAD is)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${DIST:-$ROOT/dist}
VENDOR=${SANDBOX_VENDOR_DIR:-$ROOT/vendor}
TOOLS=${CARGO_TOOLS:-${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}/tools}
# The project's maintainer identity: the address its commits carry.
MAINTAINER=${MAINTAINER:-sandbox maintainers <maintainers@users.noreply.b-seed-71e98736.example>}
TARGET=x86_64-unknown-linux-gnu

T0=$SECONDS
stamp() { printf '[release %4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() {
  printf 'release.sh: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=/dev/null
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
for tool in cargo git minisign dpkg-deb python3 gzip tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install minisign dpkg python3; rustup for cargo)"
done
[[ -n ${MINISIGN_KEY:-} && -f ${MINISIGN_KEY:-} ]] ||
  die "set MINISIGN_KEY to the minisign secret key file (README, \"Signing key\")"

if [[ -n $(git status --porcelain --untracked-files=no) && ${ALLOW_DIRTY:-0} != 1 ]]; then
  die "the checkout has uncommitted changes; commit them (only HEAD is released) or set ALLOW_DIRTY=1"
fi
VERSION=$(cargo metadata --format-version 1 --no-deps --offline | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="sandbox"))')
COMMIT=$(git rev-parse --short=12 HEAD)
EPOCH=$(git log -1 --format=%ct HEAD)
export SOURCE_DATE_EPOCH=$EPOCH
stamp "sandbox $VERSION, commit $COMMIT, SOURCE_DATE_EPOCH $EPOCH"

# ---- vendored crates: the only step that may need the network ----------
LOCK_SUM=$(sha256sum Cargo.lock | cut -d' ' -f1)
if [[ $(cat "$VENDOR/.cargo-lock-sha256" 2>/dev/null) != "$LOCK_SUM" ]]; then
  stamp "vendoring the crates into $VENDOR (cargo vendor: needs the registry once)"
  rm -rf "$VENDOR.tmp"
  cargo vendor --locked --versioned-dirs "$VENDOR.tmp" >/dev/null ||
    die "cargo vendor failed: run it once where the registry is reachable, then carry $VENDOR"
  echo "$LOCK_SUM" >"$VENDOR.tmp/.cargo-lock-sha256"
  rm -rf "$VENDOR"
  mv "$VENDOR.tmp" "$VENDOR"
fi

# ---- cargo-auditable, installed once and cached -------------------------
export PATH=$TOOLS/bin:$PATH
if ! command -v cargo-auditable >/dev/null; then
  stamp "installing cargo-auditable into $TOOLS (once; needs crates.io)"
  cargo install cargo-auditable --locked --quiet --root "$TOOLS" ||
    die "cannot install cargo-auditable; carry $TOOLS/bin/cargo-auditable from a connected machine"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sandbox-release.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
NAME=sandbox-$VERSION

# A tar that only depends on the files' contents and modes.
det_tar() { # det_tar OUT.tar.gz DIR ENTRY...
  local out=$1 dir=$2
  shift 2
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --format=posix -C "$dir" -cf - "$@" | gzip -9n >"$out"
}

rm -rf "$DIST"
mkdir -p "$DIST"

# ---- the vendored source tarball ----------------------------------------
stamp "source tarball (HEAD + vendored crates)"
SRC=$WORK/stage/$NAME
mkdir -p "$SRC"
git archive --format=tar HEAD | tar -x -C "$SRC"
cp -a "$VENDOR" "$SRC/vendor"
rm -f "$SRC/vendor/.cargo-lock-sha256"
mkdir -p "$SRC/.cargo"
cat >"$SRC/.cargo/config.toml" <<EOF
# Written by packaging/release.sh: build from vendor/, never the registry.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "vendor"

[env]
# What \`sandbox --version\` reports (there is no .git here).
SANDBOX_COMMIT = "$COMMIT"
EOF
echo "$EPOCH" >"$SRC/SOURCE_DATE_EPOCH"
{
  echo "sandbox $VERSION (commit $COMMIT)"
  echo "SOURCE_DATE_EPOCH=$EPOCH"
  echo "recipe: packaging/build-binary.sh (cargo auditable build --offline --frozen --release --target $TARGET, static, stripped, paths remapped)"
  echo "cargo-auditable: $(cargo install --list --root "$TOOLS" 2>/dev/null | grep -m1 '^cargo-auditable' || echo "from PATH: $(command -v cargo-auditable)")"
  cargo --version
  rustc -vV
} >"$SRC/BUILDINFO"
find "$SRC" -exec touch -h -d "@$EPOCH" {} +
SRC_TGZ=$NAME-vendored.tar.gz
det_tar "$DIST/$SRC_TGZ" "$WORK/stage" "$NAME"

# ---- the binary, built from that tarball with the network unplugged ------
stamp "building the binary from the source tarball (offline; a few minutes)"
mkdir -p "$WORK/build"
tar -xzf "$DIST/$SRC_TGZ" -C "$WORK/build"
NOnet=()
if [[ $(id -u) -eq 0 ]] && unshare --net true 2>/dev/null; then
  NOnet=(unshare --net --)
else
  stamp "not root: building without unplugging the network (the build is --offline anyway)"
fi
BIN=$("${NOnet[@]}" "$WORK/build/$NAME/packaging/build-binary.sh")
[[ -x $BIN ]] || die "no binary at $BIN"
"$BIN" --version | grep -qF "$COMMIT" || die "the binary does not report commit $COMMIT: $("$BIN" --version)"

# ---- man page and completions, from the binary itself ------------------
GEN=$WORK/gen
mkdir -p "$GEN/completions"
"$BIN" man >"$GEN/sandbox.8"
"$BIN" completions bash >"$GEN/completions/sandbox.bash"
"$BIN" completions zsh >"$GEN/completions/_sandbox"
"$BIN" completions fish >"$GEN/completions/sandbox.fish"

# ---- the binary tarball -------------------------------------------------
stamp "binary tarball"
BT=$WORK/bin/$NAME-x86_64-linux
mkdir -p "$BT"
install -m 0755 "$BIN" "$BT/sandbox"
install -m 0644 "$GEN/sandbox.8" README.md LICENSE "$BT/"
cp -r "$GEN/completions" "$BT/completions"
chmod 0644 "$BT"/completions/*
find "$BT" -exec touch -h -d "@$EPOCH" {} +
det_tar "$DIST/$NAME-x86_64-linux.tar.gz" "$WORK/bin" "$NAME-x86_64-linux"

# ---- the .deb -----------------------------------------------------------
stamp ".deb"
D=$WORK/deb
install -D -m 0755 "$BIN" "$D/usr/sbin/sandbox"
install -d -m 0755 "$D/usr/share/man/man8" "$D/usr/share/doc/sandbox"
gzip -9n <"$GEN/sandbox.8" >"$D/usr/share/man/man8/sandbox.8.gz"
install -D -m 0644 "$GEN/completions/sandbox.bash" "$D/usr/share/bash-completion/completions/sandbox"
install -D -m 0644 "$GEN/completions/_sandbox" "$D/usr/share/zsh/vendor-completions/_sandbox"
install -D -m 0644 "$GEN/completions/sandbox.fish" "$D/usr/share/fish/vendor_completions.d/sandbox.fish"
install -m 0644 packaging/debian/copyright "$D/usr/share/doc/sandbox/copyright"
install -D -m 0644 packaging/debian/lintian-overrides "$D/usr/share/lintian/overrides/sandbox"
gzip -9n <packaging/debian/changelog >"$D/usr/share/doc/sandbox/changelog.gz"
chmod 0644 "$D"/usr/share/man/man8/sandbox.8.gz "$D"/usr/share/doc/sandbox/changelog.gz
head -n 1 packaging/debian/changelog | grep -qF "($VERSION)" ||
  die "packaging/debian/changelog has no entry for $VERSION: add one"
mkdir -p "$D/DEBIAN"
# The glibc linked in, for the Built-Using field (Debian policy 7.8).
GLIBC=$(dpkg-query -W -f='${source:Version}' libc6)
SIZE=$(du -sk --exclude=DEBIAN "$D" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@MAINTAINER@/$MAINTAINER/" -e "s/@SIZE@/$SIZE/" \
  -e "s/@BUILT_USING@/glibc (= $GLIBC)/" packaging/debian/control.in >"$D/DEBIAN/control"
(cd "$D" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$D/DEBIAN/control" "$D/DEBIAN/md5sums"
find "$D" -exec touch -h -d "@$EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$D" "$DIST/sandbox_${VERSION}_amd64.deb" >/dev/null

# ---- SBOM ---------------------------------------------------------------
stamp "SBOM"
(cd "$WORK/build/$NAME" && cargo metadata --format-version 1 --offline --frozen --filter-platform "$TARGET") >"$WORK/meta.json"
# The crates linked in: normal dependencies for the target, proc-macros
# left out, features resolved as the release build resolves them.
(cd "$WORK/build/$NAME" && cargo tree --offline --frozen --target "$TARGET" -p sandbox -e normal,no-proc-macro \
  --prefix none --no-dedupe -f '{p}') >"$WORK/tree.txt"
python3 packaging/sbom.py "$WORK/meta.json" Cargo.lock "$WORK/tree.txt" "$BIN" "$VERSION" "$EPOCH" >"$DIST/$NAME.cdx.json"

# ---- sums and signature -------------------------------------------------
stamp "SHA256SUMS, signed"
(cd "$DIST" && sha256sum -- *.tar.gz *.deb *.cdx.json >SHA256SUMS)
# minisign asks for the key's password on the terminal (none for a key
# made with -W).
minisign -S -s "$MINISIGN_KEY" -m "$DIST/SHA256SUMS" -x "$DIST/SHA256SUMS.minisig" \
  -t "sandbox $VERSION (commit $COMMIT)" >/dev/null ||
  die "minisign could not sign (wrong key or password?)"
stamp "done: $DIST"
(cd "$DIST" && ls -l)
