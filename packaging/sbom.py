#!/usr/bin/env python3
"""A CycloneDX 1.5 JSON SBOM of the crates linked into the `sandbox` binary.

    cargo metadata --format-version 1 --offline --frozen \
        --filter-platform x86_64-unknown-linux-gnu > meta.json
    packaging/sbom.py meta.json Cargo.lock BINARY VERSION SOURCE_DATE_EPOCH > sbom.json

The crates are those reachable from the `sandbox` package over normal
dependencies for the target platform: no dev-dependencies (the test-only
regorus, tempfile), no build-dependencies, and nothing below a proc-macro
(those run in the compiler and are not linked). Each has its version, its
license expression (as the crate declares it), a purl, and the SHA-256 of
its .crate file from Cargo.lock. Output is deterministic: the timestamp
is SOURCE_DATE_EPOCH and the serial number derives from the binary's hash.
"""
import hashlib
import json
import sys
import time
import tomllib
import uuid


def lock_checksums(path):
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p["checksum"] for p in lock.get("package", []) if "checksum" in p}


def linked(meta, root_name):
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == root_name and p["source"] is None)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        is_macro = any("proc-macro" in t["kind"] for t in pkgs[pid]["targets"])
        if is_macro and pid != root:
            continue
        for dep in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]):
                todo.append(dep["pkg"])
    macros = {
        pid for pid in seen if any("proc-macro" in t["kind"] for t in pkgs[pid]["targets"])
    }
    return root, [pkgs[p] for p in seen if p != root and p not in macros]


def main():
    meta_path, lock_path, binary, version, epoch = sys.argv[1:6]
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    sums = lock_checksums(lock_path)
    with open(binary, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()
    _, crates = linked(meta, "sandbox")
    components = []
    for p in sorted(crates, key=lambda p: (p["name"], p["version"])):
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
