//! The agent owns its home and may change it while root works there
//! (issue 15). Each test plays the agent against the real binary in a
//! throwaway host, with the tricks that broke earlier versions: links,
//! directories swapped in a loop while `setup` and `--disable` run, FIFOs,
//! sparse files and hard links. Each asserts that nothing outside the home
//! changed (content, owner, mode), that no root-only content reached the
//! home, and that no command hangs.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const AGENT: u32 = 990;
const SECRET: &str = "root-only-secret-7f3a";
const FLAGS: &[&str] = &["--policy", "strict"];

/// A root-only file outside the home, and a root-owned directory, whose
/// state must never change.
struct Outside {
    secret: PathBuf,
    dir: PathBuf,
}

impl Outside {
    fn make(host: &FakeHost) -> Outside {
        let secret = host.root().join("etc/secret.json");
        fs::write(&secret, format!("{{\"{SECRET}\": \"{SECRET}\"}}\n")).expect("secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
        let dir = host.root().join("srv/outside");
        fs::create_dir_all(&dir).expect("outside dir");
        Outside { secret, dir }
    }

    fn assert_untouched(&self, context: &str) {
        let m = fs::metadata(&self.secret).expect("secret");
        assert_eq!(
            (m.uid(), m.mode() & 0o7777),
            (0, 0o600),
            "{context}: the secret's owner or mode changed"
        );
        assert!(
            fs::read_to_string(&self.secret).expect("read").contains(SECRET),
            "{context}: the secret changed"
        );
        let d = fs::metadata(&self.dir).expect("dir");
        assert_eq!(d.uid(), 0, "{context}: the outside directory was chowned");
        let entries: Vec<_> = fs::read_dir(&self.dir)
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(entries.is_empty(), "{context}: written outside the home: {entries:?}");
    }
}

fn chown_agent(p: &Path) {
    std::os::unix::fs::lchown(p, Some(AGENT), Some(AGENT)).expect("lchown");
}

/// No file under `dir` (the home, the state record) holds the secret.
fn assert_no_leak(dir: &Path, context: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.metadata().is_ok_and(|m| m.len() < 1 << 20) {
                let body = fs::read(e.path()).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&body).contains(SECRET),
                    "{context}: root-only content reached {}",
                    e.path().display()
                );
            }
        }
    }
}

/// Run `work` while a thread flips `flip` back and forth until it is done.
fn racing<T>(flip: impl Fn(bool) + Send + 'static, work: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let racer = std::thread::spawn(move || {
        let mut on = false;
        while !s.load(Ordering::Relaxed) {
            on = !on;
            flip(on);
        }
        flip(false);
    });
    let out = work();
    stop.store(true, Ordering::Relaxed);
    racer.join().expect("racer");
    out
}

/// Finding 1: `--disable` used to check `openclaw.json.bak`, then read it
/// again by path; a link swapped in between copied any root-readable file
/// into the agent's config. Now it restores root's own copy.
#[test]
fn disable_never_copies_a_root_file_into_the_agents_config() {
    let Some(host) = FakeHost::new() else { return };
    let outside = Outside::make(&host);
    let home = host.root().join("home/sandbox");
    let oc = home.join(".openclaw");
    let original = fs::read(oc.join("openclaw.json")).expect("seeded config");
    for round in 0..5 {
        host.setup_ok(FLAGS);
        let (bak, secret) = (oc.join("openclaw.json.bak"), outside.secret.clone());
        let run = racing(
            move |on| {
                let _ = fs::remove_file(&bak);
                if on {
                    let _ = std::os::unix::fs::symlink(&secret, &bak);
                } else {
                    let _ = fs::write(&bak, "{}");
                }
            },
            || host.disable(),
        );
        assert_eq!(run.code, 0, "round {round}:\n{run}");
        assert_eq!(
            fs::read(oc.join("openclaw.json")).expect("config"),
            original,
            "round {round}"
        );
        assert_no_leak(&home, &format!("round {round}"));
        outside.assert_untouched(&format!("round {round}"));
        let _ = fs::remove_file(oc.join("openclaw.json.bak"));
    }
}

/// Finding 2: the policy directory's note was read back through a link the
/// agent planted, and its keys written into the record and the note.
#[test]
fn a_planted_note_is_never_read() {
    let Some(host) = FakeHost::new() else { return };
    let outside = Outside::make(&host);
    let home = host.root().join("home/sandbox");
    let policy = home.join(".defenseclaw/policy");
    fs::create_dir_all(&policy).expect("policy dir");
    for d in [home.join(".defenseclaw"), policy.clone()] {
        chown_agent(&d);
    }
    let note = policy.join(".sandbox-written.json");
    std::os::unix::fs::symlink(&outside.secret, &note).expect("plant");
    chown_agent(&note);
    host.setup_ok(FLAGS);
    host.setup_ok(FLAGS);
    assert_no_leak(&home, "after setup");
    assert_no_leak(&host.root().join("var/lib/sandbox"), "the state record");
    outside.assert_untouched("after setup");
    host.disable_ok();
    outside.assert_untouched("after --disable");
}

/// Findings 3 and 6: directories of the home swapped for links to a
/// root-owned directory, in a loop, while setup and --disable run. Nothing
/// lands outside, nothing there is chowned, and --disable takes the
/// network away whatever the agent did.
#[test]
fn directories_swapped_during_setup_and_disable_reach_nothing_outside() {
    let Some(host) = FakeHost::new() else { return };
    let outside = Outside::make(&host);
    let home = host.root().join("home/sandbox");
    let swap = |home: PathBuf, outside: PathBuf| {
        move |on: bool| {
            for (i, rel) in [
                ".openclaw/extensions",
                ".openclaw/skills",
                ".defenseclaw",
                ".openclaw/devices",
            ]
            .into_iter()
            .enumerate()
            {
                let p = home.join(rel);
                let aside = home.join(format!(".swapped-{i}"));
                if on {
                    let _ = fs::rename(&p, &aside);
                    let _ = std::os::unix::fs::symlink(&outside, &p);
                } else if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                    let _ = fs::remove_file(&p);
                    let _ = fs::rename(&aside, &p);
                }
            }
        }
    };
    for round in 0..8 {
        let run = racing(swap(home.clone(), outside.dir.clone()), || host.setup(FLAGS));
        assert!(matches!(run.code, 0 | 1 | 3), "round {round}: setup:\n{run}");
        outside.assert_untouched(&format!("round {round}: setup"));
        let run = racing(swap(home.clone(), outside.dir.clone()), || host.disable());
        assert!(matches!(run.code, 0 | 1), "round {round}: --disable:\n{run}");
        outside.assert_untouched(&format!("round {round}: --disable"));
        assert!(
            !host.sandbox_netns().exists(),
            "round {round}: --disable left the namespace:\n{run}"
        );
        if run.code != 0 {
            // Whatever failed is named and a clean re-run finishes it.
            host.disable_ok();
        }
        for i in 0..4 {
            let _ = fs::remove_dir_all(home.join(format!(".swapped-{i}")));
        }
    }
    assert_no_leak(&home, "after the races");
}

/// Finding 4: a symlinked `~/.openclaw` was followed, so setup patched a
/// root-owned config elsewhere.
#[test]
fn a_symlinked_dot_openclaw_is_refused() {
    let Some(host) = FakeHost::new() else { return };
    let outside = Outside::make(&host);
    let home = host.root().join("home/sandbox");
    let elsewhere = host.root().join("srv/config");
    fs::create_dir_all(&elsewhere).expect("elsewhere");
    fs::write(
        elsewhere.join("openclaw.json"),
        "{\"gateway\": {\"mode\": \"local\"}}\n",
    )
    .expect("w");
    let before = fs::read(elsewhere.join("openclaw.json")).expect("r");
    fs::remove_dir_all(home.join(".openclaw")).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, home.join(".openclaw")).expect("link");
    chown_agent(&home.join(".openclaw"));
    let run = host.setup(FLAGS);
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains("symbolic link") || run.stderr.contains("not a directory"),
        "{run}"
    );
    assert_eq!(fs::read(elsewhere.join("openclaw.json")).expect("r"), before);
    assert_eq!(
        fs::read_dir(&elsewhere).expect("ls").count(),
        1,
        "no .bak or temp file there"
    );
    assert_eq!(fs::metadata(elsewhere.join("openclaw.json")).expect("m").uid(), 0);
    outside.assert_untouched("after setup");
    host.disable_ok();
}

/// Finding 5: a FIFO where a file is expected hung setup, status and
/// --disable; a link to a huge file was read whole.
#[test]
fn fifos_sparse_files_and_hard_links_never_hang_or_leak() {
    let Some(host) = FakeHost::new() else { return };
    let outside = Outside::make(&host);
    let home = host.root().join("home/sandbox");
    host.setup_ok(FLAGS);
    let prompt = |what: &str, run: &dyn Fn() -> Run| {
        let t = Instant::now();
        let r = run();
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} took {:?}:\n{r}",
            t.elapsed()
        );
        r
    };
    for rel in [
        ".openclaw/openclaw.json",
        ".openclaw/devices/paired.json",
        ".bashrc",
        ".defenseclaw/.host-ip",
        ".defenseclaw/policy/data.json",
        "run-sandbox.sh",
    ] {
        let p = home.join(rel);
        let kept = p.with_extension("kept-by-test");
        fs::rename(&p, &kept).expect("move the real file aside");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        chown_agent(&p);
        prompt(&format!("setup with a FIFO at {rel}"), &|| host.setup(FLAGS));
        prompt(&format!("status with a FIFO at {rel}"), &|| {
            host.sandbox(&["status", "--root", host.root_str()])
        });
        fs::remove_file(&p).expect("rm fifo");
        fs::rename(&kept, &p).expect("put it back");
    }
    // A 1 TiB sparse file and a hard link to a root-only file (what the
    // agent can make where protected_hardlinks=0) as the agent's config.
    let config = home.join(".openclaw/openclaw.json");
    let real = fs::read(&config).expect("config");
    let sparse = fs::File::create(home.join(".openclaw/big")).expect("big");
    sparse.set_len(1 << 40).expect("1 TiB");
    chown_agent(&home.join(".openclaw/big"));
    fs::remove_file(&config).expect("rm");
    std::os::unix::fs::symlink(home.join(".openclaw/big"), &config).expect("link to the big file");
    let r = prompt("setup with a link to a 1 TiB file", &|| host.setup(FLAGS));
    assert!(r.stderr.contains("symbolic link"), "{r}");
    fs::remove_file(&config).expect("rm");
    fs::rename(home.join(".openclaw/big"), &config).expect("the big file itself");
    let r = prompt("setup with a 1 TiB config", &|| host.setup(FLAGS));
    assert!(r.stderr.contains("more than"), "{r}");
    fs::remove_file(&config).expect("rm");
    fs::hard_link(&outside.secret, &config).expect("hard link");
    let r = prompt("setup with a hard link to a root file", &|| host.setup(FLAGS));
    assert_ne!(r.code, 0, "{r}");
    let r = prompt("--disable with a hard link to a root file", &|| host.disable());
    assert_eq!(r.code, 0, "{r}");
    fs::remove_file(&config).expect("rm");
    fs::write(&config, &real).expect("restore");
    assert_no_leak(&home, "after the FIFOs, sparse files and links");
    outside.assert_untouched("after the FIFOs, sparse files and links");
}
