//! The sandbox's DNS files: `/etc/netns/<netns>/resolv.conf` and an
//! nsswitch.conf with `hosts: files dns`, so lookups go to the listed
//! resolvers over the sandbox's own network and never over unix sockets
//! to a host resolver (systemd-resolved, nscd) that would bypass it.
//! `ip netns exec` binds both over /etc; the agent's unit binds them too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::host::{self, to_value, Resource};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::state;
use crate::sys::files;

pub struct DnsFiles;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    created_dirs: Vec<PathBuf>,
    files: Vec<FileRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileRecord {
    path: PathBuf,
    sha256: String,
    /// What was there before our first write, restored on revert.
    previous: Option<String>,
}

pub fn resolv_conf(spec: &Spec) -> String {
    let mut s = header(spec);
    if spec.uses_resolver() {
        s.push_str(&format!(
            "# Our resolver on the host IP: it answers only the names policy {} allows.\nnameserver {}\n",
            spec.policy_name, spec.net.host_ip
        ));
        s.push_str("options timeout:2 attempts:2\n");
    } else if spec.policy.dns.allow && !spec.dns.is_empty() {
        for ip in &spec.dns {
            s.push_str(&format!("nameserver {ip}\n"));
        }
        // Fail over quickly: a blocked resolver must not stall the agent.
        s.push_str("options timeout:2 attempts:2\n");
    } else {
        s.push_str(&format!(
            "# policy {}: no DNS from inside the sandbox\n",
            spec.policy_name
        ));
    }
    s
}

pub fn nsswitch_conf(spec: &Spec) -> String {
    let mut s = header(spec);
    s.push_str(
        "passwd:         files\ngroup:          files\nshadow:         files\n\
         hosts:          files dns\nnetworks:       files\nprotocols:      files\n\
         services:       files\nethers:         files\nrpc:            files\n",
    );
    s
}

fn header(spec: &Spec) -> String {
    header_for(&spec.name)
}

/// Our first line: it marks a file as ours when the record is lost.
fn header_for(name: &str) -> String {
    format!("# Written by `sandbox setup --name {name}`; `sandbox setup --disable` removes it.\n")
}

fn wanted_files(spec: &Spec) -> Vec<(PathBuf, String)> {
    let dir = spec.root.path(format!("/etc/netns/{}", spec.net.netns));
    vec![
        (dir.join("resolv.conf"), resolv_conf(spec)),
        (dir.join("nsswitch.conf"), nsswitch_conf(spec)),
    ]
}

impl Step for DnsFiles {
    fn id(&self) -> &'static str {
        "dns"
    }

    fn in_jobs(&self) -> bool {
        true
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        for (path, body) in wanted_files(spec) {
            let inverse = "removed if unedited (an edited one is kept); a file there before is restored";
            inv.file(self.id(), &path, "root", 0o644, body.as_bytes(), inverse);
        }
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (path, body) in wanted_files(spec) {
            if files::hash_of(&path)?.as_deref() != Some(&files::sha256_hex(body.as_bytes())) {
                out.push(format!(
                    "write {} (0644, sha256 {})",
                    path.display(),
                    &files::sha256_hex(body.as_bytes())[..12]
                ));
            }
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let mut r = rec.get::<Record>().unwrap_or_default();
        let wanted = wanted_files(spec);
        // Write-ahead: the directories are recorded before they exist;
        // `/etc/netns` and its parents in the host record (the last sandbox
        // removes them), our own directory in ours.
        let dir = wanted.first().and_then(|(p, _)| p.parent()).map(Path::to_path_buf);
        let missing: Vec<PathBuf> = dir
            .iter()
            .filter(|d| !d.exists() && !r.created_dirs.contains(d))
            .cloned()
            .collect();
        r.created_dirs.extend(missing.iter().cloned());
        // Our record first: a run killed once the host record names us as
        // a holder must leave a record whose revert lets go again.
        rec.put(&r)?;
        if let Some(parent) = dir.as_ref().and_then(|d| d.parent()) {
            host::with(&spec.root, |h| {
                h.hold(Resource::EtcNetns, &spec.name, || to_value(files::missing_dirs(parent)))
            })?;
        }
        // Every file to write is recorded first, in one save; then all are
        // written and their directory synced once.
        let mut writes: Vec<(PathBuf, String)> = Vec::new();
        for (path, body) in wanted {
            let sha = files::sha256_hex(body.as_bytes());
            if files::hash_of(&path)?.as_deref() == Some(&sha) {
                continue;
            }
            match r.files.iter_mut().find(|f| f.path == path) {
                Some(f) => f.sha256 = sha,
                None => r.files.push(FileRecord {
                    previous: files::previous_content(&path)?,
                    path: path.clone(),
                    sha256: sha,
                }),
            }
            writes.push((path, body));
        }
        rec.put(&r)?; // a no-op when nothing changed
        if writes.is_empty() && missing.is_empty() {
            return Ok(vec![]);
        }
        if let Some(dir) = &dir {
            files::create_dirs(dir, 0o755)?;
        }
        let all: Vec<(&Path, &[u8])> = writes.iter().map(|(p, b)| (p.as_path(), b.as_bytes())).collect();
        files::write_atomic_all(&all, 0o644)?;
        Ok(writes.iter().map(|(p, _)| format!("wrote {}", p.display())).collect())
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        // Only under /etc/netns, whatever an altered record says.
        let etc_netns = undo.root.path("/etc/netns");
        for f in &r.files {
            state::confine(&f.path, std::slice::from_ref(&etc_netns))?;
        }
        state::confine_dirs(&r.created_dirs, &undo.root, &etc_netns)?;
        let mut out = Vec::new();
        for f in &r.files {
            out.extend(files::undo_write(&f.path, &f.sha256, f.previous.as_deref(), 0o644)?);
        }
        // A record from before the host scope may name /etc/netns too:
        // only an empty directory is ever removed, so that is harmless.
        files::remove_dirs(&r.created_dirs)?;
        out.extend(release_etc_netns(undo, &etc_netns)?);
        Ok(out)
    }

    /// Files under `/etc/netns/<name>0/` that start with our header line are
    /// ours; anything else there is left. What a file replaced was in the
    /// lost record, so it cannot be put back. Empty directories go.
    fn sweep(&self, undo: &Undo, name: &str) -> Result<Vec<String>> {
        let etc_netns = undo.root.path("/etc/netns");
        let dir = etc_netns.join(format!("{name}0"));
        let mut out = Vec::new();
        for file in ["resolv.conf", "nsswitch.conf"] {
            let path = dir.join(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            if text.starts_with(&header_for(name)) {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                out.push(format!("removed {} (our header line)", path.display()));
            } else {
                out.push(format!("left {}: it lacks our header line", path.display()));
            }
        }
        if !out.is_empty() {
            files::remove_dirs(&[etc_netns.clone(), dir.clone()])?;
            if !dir.exists() {
                out.push(format!("removed {} (empty)", dir.display()));
            }
        }
        out.extend(release_etc_netns(undo, &etc_netns)?);
        Ok(out)
    }
}

/// `/etc/netns` (and the parents the first sandbox made) go with the last
/// sandbox that holds it, if empty.
fn release_etc_netns(undo: &Undo, etc_netns: &Path) -> Result<Vec<String>> {
    host::with(&undo.root, |h| {
        h.release(Resource::EtcNetns, &undo.name, |v| {
            let dirs: Vec<PathBuf> =
                serde_json::from_value(v.clone()).map_err(|e| host::bad_original("etc-netns", e))?;
            state::confine_dirs(&dirs, &undo.root, etc_netns)?;
            files::remove_dirs(&dirs)?;
            Ok(Vec::new())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    #[test]
    fn resolv_conf_lists_the_resolvers() {
        let policy = crate::testutil::DNS_ONLY_POLICY;
        let s = resolv_conf(&spec(&["--policy", policy, "--dns", "192.0.2.53,192.0.2.54"]));
        assert!(s.contains("nameserver 192.0.2.53\nnameserver 192.0.2.54\n"), "{s}");
        assert!(!s.contains("127.0.0"), "{s}");
    }

    #[test]
    fn names_in_the_policy_point_dns_at_our_resolver_only() {
        for flags in [
            &["--policy", "default", "--dns", "192.0.2.53"][..],
            &["--policy", "strict", "--mode", "audit"],
        ] {
            let s = resolv_conf(&spec(flags));
            let servers: Vec<&str> = s.lines().filter(|l| l.starts_with("nameserver")).collect();
            assert_eq!(servers, ["nameserver 10.200.0.1"], "{flags:?}: {s}");
        }
    }

    #[test]
    fn strict_gets_no_nameserver() {
        let s = resolv_conf(&spec(&["--policy", "strict"]));
        assert!(!s.contains("nameserver"), "{s}");
    }

    #[test]
    fn nsswitch_never_asks_a_host_daemon() {
        let s = nsswitch_conf(&spec(&[]));
        let hosts = s.lines().find(|l| l.starts_with("hosts:")).expect("hosts line");
        assert_eq!(hosts.split_whitespace().collect::<Vec<_>>(), ["hosts:", "files", "dns"]);
        for bad in ["resolve", "systemd", "mdns", "myhostname", "sss", "ldap"] {
            assert!(!s.contains(bad), "{bad} in {s}");
        }
    }
}
