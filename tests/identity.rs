//! Root integration tests for the identity and files steps (user, policy,
//! openclaw, scripts, pairing, extras): the real binary, run against a
//! seeded `--root` tree from a thread that sits in a throwaway network +
//! mount namespace (the binary inherits them), so the real host's users,
//! links and mounts are never touched.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox");

/// A throwaway host (tests/common) whose `--root` tree is seeded first.
fn in_throwaway_host(body: impl FnOnce(&Path) + Send + 'static) {
    common::in_throwaway_host(move |root| {
        seed(root);
        body(root);
    });
}

/// A minimal tree: root and nobody, nothing else.
fn seed(root: &Path) {
    let etc = root.join("etc");
    fs::create_dir_all(&etc).expect("etc");
    let files = [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            0o644,
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n", 0o644),
        (
            "shadow",
            "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
            0o640,
        ),
        ("gshadow", "root:*::\nnogroup:*::\n", 0o640),
    ];
    for (name, text, mode) in files {
        let p = etc.join(name);
        fs::write(&p, text).expect("seed");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

fn sandbox(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "setup",
        "--root",
        root.to_str().expect("utf8 root"),
        "--no-systemd",
        "--non-interactive",
    ];
    if !extra.contains(&"--policy") && !extra.contains(&"--disable") {
        args.extend(["--policy", "strict"]);
    }
    args.extend_from_slice(extra);
    Command::new(BIN).args(&args).output().expect("run sandbox")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "expected success:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: Output, code: i32, needle: &str) -> String {
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    assert!(t.contains(needle), "expected {needle:?} in:\n{t}");
    t
}

fn home(root: &Path) -> PathBuf {
    root.join("home/sandbox")
}

fn oc_json(root: &Path) -> PathBuf {
    home(root).join(".openclaw/openclaw.json")
}

fn account(root: &Path, name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f[0] == name).then(|| (f[2].parse().expect("uid"), f[3].parse().expect("gid")))
    })
}

fn group_exists(root: &Path, name: &str) -> bool {
    fs::read_to_string(root.join("etc/group"))
        .expect("group")
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

/// What OpenClaw writes on its first run, formatted its own way (4
/// spaces), so a byte-for-byte restore is visible.
const ORIGINAL: &str =
    "{\n    \"master_key\": \"mk-123\",\n    \"gateway\": {\n        \"mode\": \"local\"\n    }\n}\n";

/// The first run stops at openclaw.json (nothing written there); then the
/// file appears as OpenClaw would make it, owned by the sandbox user.
fn first_setup(root: &Path) -> (u32, u32) {
    // Exit 1, not 3: the run had changed the host (user, namespace,
    // tables...) before it stopped, and 3 says nothing was changed.
    let t = fails(
        sandbox(root, &[]),
        1,
        "openclaw.json: does not exist: OpenClaw was never set up for the sandbox user",
    );
    assert!(t.contains("note: this run had already changed the host (user, "), "{t}");
    assert!(
        t.contains("run `sudo -u sandbox -H openclaw setup --baseline` (it writes the config), then re-run"),
        "{t}"
    );
    assert!(!oc_json(root).exists(), "nothing written");
    let (uid, gid) = account(root, "sandbox").expect("user created");
    let dir = home(root).join(".openclaw");
    fs::create_dir(&dir).expect("mkdir .openclaw");
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
    fs::write(oc_json(root), ORIGINAL).expect("write openclaw.json");
    std::os::unix::fs::chown(oc_json(root), Some(uid), Some(gid)).expect("chown");
    fs::set_permissions(oc_json(root), fs::Permissions::from_mode(0o600)).expect("chmod");
    ok(sandbox(root, &[]));
    (uid, gid)
}

/// Every object under `dir` (links not followed): owned by `uid`, nothing
/// group- or world-writable.
fn check_tree(dir: &Path, uid: u32) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let p = entry.expect("entry").path();
        let m = fs::symlink_metadata(&p).expect("lstat");
        if m.file_type().is_symlink() {
            continue;
        }
        assert_eq!(m.uid(), uid, "{} owned by {}", p.display(), m.uid());
        // One exception, by design: the sidecar (in the sandbox's group
        // through its unit) repairs its pairing in ~/.openclaw/devices.
        let group_may_write = p.ends_with(".openclaw/devices");
        assert_eq!(
            m.mode() & if group_may_write { 0o002 } else { 0o022 },
            0,
            "{} is group/world-writable: {:o}",
            p.display(),
            m.mode()
        );
        if m.is_dir() {
            check_tree(&p, uid);
        }
    }
}

#[test]
fn setup_rerun_disable_and_purge() {
    in_throwaway_host(|root| {
        let (uid, gid) = first_setup(root);
        let h = home(root);
        let hm = fs::symlink_metadata(&h).expect("home");
        assert_eq!((hm.uid(), hm.gid(), hm.mode() & 0o7777), (uid, gid, 0o750));
        let pw = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
        assert!(pw.contains(":/home/sandbox:/bin/bash"), "{pw}");
        assert!(fs::read_to_string(h.join(".bashrc"))
            .expect("bashrc")
            .contains("openclaw"));

        let doc: serde_json::Value = serde_json::from_slice(&fs::read(oc_json(root)).expect("read")).expect("json");
        assert!(doc.get("guardrail").is_none(), "OpenClaw's schema has no guardrail key");
        assert_eq!(doc["plugins"]["entries"]["defenseclaw"]["enabled"], true);
        assert_eq!(doc["gateway"]["port"], 18789);
        assert_eq!(doc["gateway"]["bind"], "custom");
        assert_eq!(doc["gateway"]["customBindHost"], "10.200.0.2");
        let token = doc["gateway"]["auth"]["token"].as_str().expect("token").to_string();
        assert_eq!(doc["master_key"], "mk-123");
        let om = fs::metadata(oc_json(root)).expect("meta");
        assert_eq!((om.uid(), om.mode() & 0o777), (uid, 0o600), "owner and mode kept");
        let bak = h.join(".openclaw/openclaw.json.bak");
        assert_eq!(fs::read_to_string(&bak).expect("bak"), ORIGINAL);

        // No SUDO_USER: the sidecar's data lives in its dynamic user's state
        // directory, root's until systemd hands it over.
        let side = root.join("var/lib/private/defenseclaw-sandbox");
        let key = side.join("device.key");
        let km = fs::metadata(&key).expect("key");
        assert_eq!((km.uid(), km.mode() & 0o777), (0, 0o600));
        assert!(fs::read_to_string(&key)
            .expect("key")
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));
        let paired = fs::read_to_string(h.join(".openclaw/devices/paired.json")).expect("paired.json");
        assert!(
            paired.contains("\"publicKey\"") && paired.contains("\"operator\""),
            "{paired}"
        );
        let env = fs::read_to_string(side.join(".env")).expect(".env");
        assert_eq!(
            env,
            format!("OPENCLAW_GATEWAY_TOKEN={token}\n"),
            "the sidecar holds the agent's token"
        );
        assert_eq!(fs::metadata(side.join(".env")).expect("env").mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_to_string(h.join(".defenseclaw/.host-ip")).expect(".host-ip"),
            "10.200.0.1\n"
        );
        for f in [
            "egress.rego",
            "data.json",
            "policy.toml",
            "manifest.json",
            "guardrail/secrets.json",
        ] {
            assert!(h.join(".defenseclaw/policy").join(f).is_file(), "{f}");
        }
        for f in [
            "run-sandbox.sh",
            "pair.sh",
            ".openclaw/skills/codeguard/SKILL.md",
            ".openclaw/extensions/defenseclaw/index.js",
        ] {
            assert!(h.join(f).is_file(), "{f}");
        }
        check_tree(&h, uid);

        let again = ok(sandbox(root, &[]));
        assert!(again.contains("nothing changed"), "{again}");

        let out = ok(sandbox(root, &["--disable"]));
        assert_eq!(
            fs::read_to_string(oc_json(root)).expect("read"),
            ORIGINAL,
            "byte for byte\n{out}"
        );
        assert!(!bak.exists(), "the .bak went with the restore");
        assert!(account(root, "sandbox").is_some(), "user kept");
        assert!(!side.exists(), "the dynamic user's state, made by setup, went");
        assert!(!h.join(".openclaw/devices").exists(), "our pairing went");
        assert!(h.join(".defenseclaw/policy/egress.rego").is_file(), "policy kept");
        assert!(
            !h.join("run-sandbox.sh").exists() && !h.join(".openclaw/skills").exists(),
            "scripts and extras gone"
        );
        assert!(!h.join(".bashrc").exists(), "our .bashrc gone");

        // Back again (an existing sidecar key is reused), then --purge.
        ok(sandbox(root, &[]));
        let before = fs::read(&key).expect("key");
        ok(sandbox(root, &["--policy", common::DNS_ONLY]));
        assert_eq!(fs::read(&key).expect("key"), before, "existing key reused");
        ok(sandbox(root, &["--disable", "--purge"]));
        assert!(account(root, "sandbox").is_none(), "user removed");
        assert!(!group_exists(root, "sandbox"), "group removed");
        assert!(!h.exists(), "home removed");
    });
}

#[test]
fn operator_edits_survive_rerun_preset_switch_and_disable() {
    in_throwaway_host(|root| {
        first_setup(root);
        let h = home(root);
        let rego = h.join(".defenseclaw/policy/egress.rego");
        let mut edited = fs::read_to_string(&rego).expect("rego");
        edited.push_str("\n# operator: reviewed 2024-05-01\n");
        fs::write(&rego, &edited).expect("edit rego");

        let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(oc_json(root)).expect("read")).expect("json");
        doc["agents"] = serde_json::json!({"defaults": {"model": "local"}});
        fs::write(oc_json(root), serde_json::to_string_pretty(&doc).expect("json")).expect("edit");

        let out = ok(sandbox(root, &[]));
        assert!(out.contains("kept") && out.contains("egress.rego"), "{out}");
        assert_eq!(fs::read_to_string(&rego).expect("rego"), edited);

        // Another preset: the edited module stays, unedited files follow.
        let out = ok(sandbox(root, &["--policy", "default", "--no-guardrail"]));
        assert_eq!(fs::read_to_string(&rego).expect("rego"), edited, "{out}");
        let data = fs::read_to_string(h.join(".defenseclaw/policy/data.json")).expect("data");
        assert!(
            data.contains("registry.npmjs.org") && data.contains("\"preset\": \"default\""),
            "{data}"
        );
        let toml = fs::read_to_string(h.join(".defenseclaw/policy/policy.toml")).expect("toml");
        assert!(toml.starts_with("# default"), "{toml}");
        let now: serde_json::Value = serde_json::from_slice(&fs::read(oc_json(root)).expect("read")).expect("json");
        assert!(now.get("plugins").is_none(), "--no-guardrail took our plugin entry out");
        assert_eq!(now["agents"]["defaults"]["model"], "local");

        let out = ok(sandbox(root, &["--disable"]));
        let after: serde_json::Value = serde_json::from_slice(&fs::read(oc_json(root)).expect("read")).expect("json");
        assert_eq!(
            after,
            serde_json::json!({"master_key": "mk-123", "gateway": {"mode": "local"}, "agents": {"defaults": {"model": "local"}}}),
            "our keys out, the operator's edit kept\n{out}"
        );
        assert_eq!(
            fs::read_to_string(h.join(".openclaw/openclaw.json.bak")).ok(),
            None,
            "our unedited .bak went (there was none before setup)"
        );
        assert_eq!(fs::read_to_string(&rego).expect("rego"), edited);
    });
}

#[test]
fn symlink_ownership_and_malformed_openclaw_json_are_refused() {
    in_throwaway_host(|root| {
        fails(sandbox(root, &[]), 1, "never set up");
        let (uid, gid) = account(root, "sandbox").expect("user");
        let h = home(root);
        let dir = h.join(".openclaw");
        fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        let passwd_before = fs::read(root.join("etc/passwd")).expect("passwd");

        std::os::unix::fs::symlink(root.join("etc/passwd"), oc_json(root)).expect("link");
        fails(sandbox(root, &[]), 3, "symbolic link");
        assert_eq!(fs::read(root.join("etc/passwd")).expect("passwd"), passwd_before);
        fs::remove_file(oc_json(root)).expect("rm link");

        fs::write(oc_json(root), ORIGINAL).expect("write");
        std::os::unix::fs::chown(oc_json(root), Some(12345), Some(12345)).expect("chown");
        fails(sandbox(root, &[]), 3, "owned by uid 12345");
        assert_eq!(fs::read_to_string(oc_json(root)).expect("r"), ORIGINAL, "untouched");
        assert!(!dir.join("openclaw.json.bak").exists());

        fs::write(oc_json(root), "{\n  \"master_key\": \"x\",\n  oops\n}\n").expect("write");
        std::os::unix::fs::chown(oc_json(root), Some(uid), Some(gid)).expect("chown");
        fails(sandbox(root, &[]), 3, "line 4");
        assert!(!dir.join("openclaw.json.bak").exists());
        fs::write(oc_json(root), ORIGINAL).expect("write");

        // A link the agent planted where we make a directory is refused
        // (exit 1: the steps before it patched openclaw.json and wrote
        // the scripts in this run)...
        let outside = root.join("outside");
        fs::create_dir(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, h.join(".openclaw/skills")).expect("link");
        let t = fails(sandbox(root, &[]), 1, "symbolic link");
        assert!(t.contains("already changed the host (openclaw, "), "{t}");
        assert_eq!(
            fs::read_dir(&outside).expect("ls").count(),
            0,
            "nothing written through it"
        );
        assert_eq!(fs::metadata(&outside).expect("m").uid(), 0, "not chowned");
        fs::remove_file(h.join(".openclaw/skills")).expect("rm");

        // ...and one elsewhere in the home is never followed.
        std::os::unix::fs::symlink(root.join("etc"), h.join("evil")).expect("link");
        ok(sandbox(root, &[]));
        for p in [root.join("etc"), root.join("etc/passwd"), root.join("etc/shadow")] {
            assert_eq!(fs::metadata(&p).expect("m").uid(), 0, "{} not chowned", p.display());
        }
        assert_eq!(fs::symlink_metadata(h.join("evil")).expect("m").uid(), 0);
    });
}

/// A system account that exists (uid below UID_MIN, no password) is
/// adopted; a person's account would be refused in preflight.
#[test]
fn an_adopted_user_is_never_removed() {
    in_throwaway_host(|root| {
        let mut pw = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
        pw.push_str("sandbox:x:950:950:existing:/home/sandbox:/bin/bash\n");
        fs::write(root.join("etc/passwd"), pw).expect("w");
        let mut gr = fs::read_to_string(root.join("etc/group")).expect("group");
        gr.push_str("sandbox:x:950:\n");
        fs::write(root.join("etc/group"), gr).expect("w");
        let h = home(root);
        fs::create_dir_all(h.join(".openclaw")).expect("home");
        fs::write(h.join("notes.txt"), "mine").expect("w");
        fs::write(oc_json(root), ORIGINAL).expect("w");
        for p in [h.clone(), h.join(".openclaw"), oc_json(root), h.join("notes.txt")] {
            std::os::unix::fs::chown(&p, Some(950), Some(950)).expect("chown");
        }
        let out = ok(sandbox(root, &[]));
        assert!(out.contains("adopted existing user sandbox"), "{out}");
        let out = ok(sandbox(root, &["--disable", "--purge"]));
        assert!(out.contains("kept user sandbox: it existed before setup"), "{out}");
        assert_eq!(account(root, "sandbox"), Some((950, 950)));
        assert!(group_exists(root, "sandbox"));
        assert_eq!(fs::read_to_string(h.join("notes.txt")).expect("r"), "mine");
        assert_eq!(fs::read_to_string(oc_json(root)).expect("r"), ORIGINAL);
    });
}
