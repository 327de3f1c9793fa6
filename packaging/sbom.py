#!/usr/bin/env python3
"""A CycloneDX 1.5 JSON SBOM of the crates linked into the `sandbox` binary.

    T=x86_64-unknown-linux-gnu
    cargo metadata --format-version 1 --offline --frozen --filter-platform $T > meta.json
    cargo tree --offline --frozen --target $T -p sandbox -e normal,no-proc-macro \
        --prefix none --no-dedupe -f '{p}' > tree.txt
    packaging/sbom.py meta.json Cargo.lock tree.txt BINARY VERSION SOURCE_DATE_EPOCH > sbom.json

The crates are exactly those linked into the binary: `cargo tree` over
normal dependencies for the target, without proc-macros, resolves
features as the release build does (no dev-dependencies, so nothing their
features would add). Not listed: proc-macros (serde_derive, clap_derive,
thiserror-impl, async-trait, zbus_macros: they run in the compiler),
build-dependencies, dev-dependencies (regorus, tempfile), and crates only a
dev-dependency's features pull in (rand_core 0.10; `cargo metadata`'s
resolve, and so the `cargo auditable` list in the binary, unify those in).
Each listed crate must also be in the binary's own `cargo auditable` list
(ELF section `.dep-v0`), which proves the tree describes this binary.

The metadata gives each crate's license expression (as the crate declares
it), Cargo.lock the SHA-256 of its .crate file. Output is deterministic:
the timestamp is SOURCE_DATE_EPOCH and the serial number derives from the
binary's hash.
"""
import hashlib
import json
import struct
import sys
import time
import tomllib
import uuid
import zlib


def lock_checksums(path):
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p["checksum"] for p in lock.get("package", []) if "checksum" in p}


def elf_section(data, wanted):
    """The bytes of section `wanted` of a 64-bit little-endian ELF file, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit("sbom.py: the binary is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)

    names = header(shstrndx)[4]
    for i in range(shnum):
        name_off, _, _, _, offset, size = header(i)
        start = names + name_off
        if data[start : data.index(b"\0", start)] == wanted:
            return data[offset : offset + size]
    return None


def auditable(binary_data):
    """(name, version) of every package `cargo auditable` recorded in the binary."""
    section = elf_section(binary_data, b".dep-v0")
    if section is None:
        sys.exit(
            "sbom.py: the binary has no .dep-v0 section: build it with `cargo auditable` "
            "(packaging/build-binary.sh does, unless CARGO_AUDITABLE=0)"
        )
    tree = json.loads(zlib.decompress(section))
    return {(p["name"], p["version"]) for p in tree["packages"]}


def linked(tree_path):
    """(name, version) of every crate in `cargo tree`'s output, but the root."""
    crates = set()
    with open(tree_path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if len(words) < 2 or not words[1].startswith("v"):
                continue
            if len(words) > 2 and words[2].startswith("("):  # the root: sandbox v0.1.0 (/path)
                continue
            crates.add((words[0], words[1][1:]))
    if not crates:
        sys.exit(f"sbom.py: no crates in {tree_path}: is it `cargo tree ... -f '{{p}}'` output?")
    return sorted(crates)


def main():
    if len(sys.argv) != 7:
        sys.exit("usage: sbom.py META.json Cargo.lock TREE.txt BINARY VERSION SOURCE_DATE_EPOCH")
    meta_path, lock_path, tree_path, binary, version, epoch = sys.argv[1:7]
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    sums = lock_checksums(lock_path)
    with open(binary, "rb") as f:
        data = f.read()
    bin_sha = hashlib.sha256(data).hexdigest()
    pkgs = {(p["name"], p["version"]): p for p in meta["packages"]}
    crates = linked(tree_path)
    in_binary = auditable(data)
    stray = [f"{n} {v}" for n, v in crates if (n, v) not in in_binary or (n, v) not in pkgs]
    if stray:
        sys.exit(f"sbom.py: cargo tree lists crates the binary's cargo auditable data does not: {', '.join(stray)}")
    components = []
    for key in crates:
        p = pkgs[key]
        c = {
            "type": "library",
            "bom-ref": f"pkg:cargo/{p['name']}@{p['version']}",
            "name": p["name"],
            "version": p["version"],
            "purl": f"pkg:cargo/{p['name']}@{p['version']}",
        }
        if p.get("license"):
            c["licenses"] = [{"expression": p["license"]}]
        checksum = sums.get((p["name"], p["version"]))
        if checksum:
            c["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        components.append(c)
    missing = [c["name"] for c in components if "hashes" not in c or "licenses" not in c]
    if missing:
        sys.exit(f"sbom.py: no checksum or license for: {', '.join(missing)}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.UUID(bin_sha[:32], version=4)}",
        "version": 1,
        "metadata": {
            "timestamp": stamp,
            "tools": [{"name": "packaging/sbom.py", "version": version}],
            "component": {
                "type": "application",
                "bom-ref": f"pkg:cargo/sandbox@{version}",
                "name": "sandbox",
                "version": version,
                "purl": f"pkg:cargo/sandbox@{version}",
                "licenses": [{"expression": "Apache-2.0"}],
                "hashes": [{"alg": "SHA-256", "content": bin_sha}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": f"pkg:cargo/sandbox@{version}", "dependsOn": [c["bom-ref"] for c in components]}
        ],
    }
    json.dump(bom, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
