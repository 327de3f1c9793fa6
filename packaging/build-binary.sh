#!/usr/bin/env bash
# The one recipe for the shipped `sandbox` binary. Run it at the top of an
# unpacked source tarball (sandbox-VERSION-vendored.tar.gz), with the
# network unplugged if you like (`unshare --net packaging/build-binary.sh`):
# it builds with `cargo build --offline --frozen --release` through
# `cargo auditable` (the dependency list embedded for `cargo audit bin`),
# statically linked, stripped, and prints the binary's path.
#
# Bit for bit the same wherever the tarball is unpacked: the directory is
# remapped to /build/sandbox (--remap-path-prefix), the commit and
# SOURCE_DATE_EPOCH come from the tarball (.cargo/config.toml and the
# SOURCE_DATE_EPOCH file), and the toolchain is the one in BUILDINFO.
#
# Environment: CARGO_AUDITABLE=0 builds with plain cargo (the binary then
# lacks the .dep-v0 section and differs from the shipped one);
# CARGO_TARGET_DIR (default ./target).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu

if [[ -f SOURCE_DATE_EPOCH ]]; then
  SOURCE_DATE_EPOCH=$(<SOURCE_DATE_EPOCH)
  export SOURCE_DATE_EPOCH
fi
# Static (glibc static-pie): runs on Debian 11 (glibc 2.31) and 12 alike
# (README, "Which Debian"). --target keeps the flags off build scripts and
# proc macros, which cannot be static.
RUSTFLAGS="--remap-path-prefix=$PWD=/build/sandbox --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo -C target-feature=+crt-static"
export RUSTFLAGS
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

build=(build)
if [[ ${CARGO_AUDITABLE:-1} != 0 ]]; then
  command -v cargo-auditable >/dev/null ||
    { echo "build-binary.sh: cargo-auditable is not on PATH (cargo install cargo-auditable --locked, or CARGO_AUDITABLE=0)" >&2; exit 1; }
  build=(auditable build)
fi
cargo "${build[@]}" --offline --frozen --release --target "$TARGET" --bin sandbox --quiet >&2
echo "$CARGO_TARGET_DIR/$TARGET/release/sandbox"
