//! The sandbox user: a system user and group named by `--name`, home
//! `--sandbox-home` (0750, made here without a skeleton), shell /bin/bash,
//! and a `.bashrc` (+ a `.bash_profile` that reads it) that starts OpenClaw
//! for interactive logins inside the sandbox's network namespace.
//!
//! A user that already existed is adopted and recorded as such, so nothing
//! ever removes it. `--disable` keeps user, group and home (they hold the
//! operator's data) and removes only our unedited shell files;
//! `--disable --purge` also removes user, group and home if setup made them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::home::{self, FileSet, HomeRef};
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::owner::{self, Owner};
use crate::sys::{files, users};

pub struct User;

pub const HOME_MODE: u32 = 0o750;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    name: String,
    /// The home as seen under `--root`.
    home: PathBuf,
    created_user: bool,
    created_group: bool,
    created_home: bool,
    /// Parents of the home we had to make (root-owned, 0755).
    created_parents: Vec<PathBuf>,
    /// The shell files, through the home-access layer.
    #[serde(flatten)]
    seeded: FileSet,
}

/// Interactive logins start OpenClaw, but only inside the sandbox's
/// network namespace: outside it the agent would have the host's network.
pub fn bashrc(spec: &Spec) -> String {
    format!(
        r#"# ~/.bashrc of the OpenClaw sandbox user.
# Written by `sandbox setup --name {name}`; `sandbox setup --disable` removes it
# unless you edited it.
#
# An interactive shell of this user starts the OpenClaw gateway, but only
# inside the sandbox's network namespace ({netns}; entered by ~/run-sandbox.sh
# or the openshell-sandbox unit). Anywhere else the agent would have the
# host's network, so the shell says so and starts nothing.
# Set SANDBOX_NO_OPENCLAW=1 for a plain shell.

case $- in
    *i*) ;;
    *) return ;;
esac

sandbox_in_netns() {{
    local here there
    here=$(stat -L -c %d:%i /proc/self/ns/net 2>/dev/null) || return 1
    there=$(stat -L -c %d:%i /run/netns/{netns} 2>/dev/null) || return 1
    [ -n "$here" ] && [ "$here" = "$there" ]
}}

if [ -z "${{SANDBOX_NO_OPENCLAW:-}}" ]; then
    if ! sandbox_in_netns; then
        echo "sandbox: not inside the network namespace {netns}; OpenClaw not started (run ~/run-sandbox.sh as root)" >&2
    elif ! command -v openclaw >/dev/null 2>&1; then
        echo "sandbox: openclaw is not on PATH; install it for this user" >&2
    else
        exec openclaw gateway --port {port}
    fi
fi
"#,
        name = spec.name,
        netns = spec.net.netns,
        port = spec.openclaw_port,
    )
}

/// Login shells read ~/.bash_profile, not ~/.bashrc: hand over to it.
pub fn bash_profile(spec: &Spec) -> String {
    format!(
        "# ~/.bash_profile of the OpenClaw sandbox user.\n\
         # Written by `sandbox setup --name {}`; login shells read ~/.bashrc too.\n\
         if [ -f \"$HOME/.bashrc\" ]; then\n    . \"$HOME/.bashrc\"\nfi\n",
        spec.name
    )
}

fn wanted_files(spec: &Spec) -> Vec<(PathBuf, String, u32)> {
    vec![
        (PathBuf::from(".bash_profile"), bash_profile(spec), 0o644),
        (PathBuf::from(".bashrc"), bashrc(spec), 0o644),
    ]
}

impl Step for User {
    fn id(&self) -> &'static str {
        "user"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let h = home::dir(spec);
        inv.object(
            self.id(),
            "user",
            &spec.name,
            &format!(
                "system user and group {0}, shell /bin/bash, home {1} (0750, owner {0})",
                spec.name,
                h.display()
            ),
            "kept (holds data); --disable --purge removes user, group and home if setup made them",
        );
        for (path, body, _) in wanted_files(spec) {
            inv.file(
                self.id(),
                &h.join(path),
                &spec.name,
                0o644,
                body.as_bytes(),
                "removed if unedited",
            );
        }
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let h = home::dir(spec);
        if users::user(&spec.root, &spec.name)?.is_none() {
            out.push(format!(
                "create system user and group {} (shell /bin/bash, home {})",
                spec.name,
                spec.sandbox_home.display()
            ));
        }
        if fs::symlink_metadata(&h).is_err() {
            out.push(format!("create {} ({:o})", h.display(), HOME_MODE));
        }
        let r = rec.and_then(|v| serde_json::from_value::<Record>(v.clone()).ok());
        out.extend(home::plan_files(
            spec,
            &wanted_files(spec),
            r.as_ref().map(|r| &r.seeded),
        )?);
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let mut r = rec.get::<Record>().unwrap_or_default();
        let mut out = Vec::new();
        let h = home::dir(spec);
        r.name = spec.name.clone();
        r.home = h.clone();

        let acct = match users::user(&spec.root, &spec.name)? {
            Some(a) => {
                if rec.get::<Record>().is_none() {
                    if a.gecos == users::COMMENT {
                        // Made by an earlier setup and kept by --disable:
                        // still ours, so --purge may take it away.
                        r.created_user = true;
                        r.created_group = users::group(&spec.root, &spec.name)? == Some(a.gid);
                        r.created_home = fs::symlink_metadata(&h).is_ok_and(|m| m.uid() == a.uid);
                        out.push(format!(
                            "found user {} (uid {}) made by an earlier setup and kept by --disable",
                            a.name, a.uid
                        ));
                    } else {
                        out.push(format!(
                            "adopted existing user {} (uid {}): setup did not create it, so nothing removes it",
                            a.name, a.uid
                        ));
                    }
                }
                a
            }
            None => {
                let group_exists = users::group(&spec.root, &spec.name)?.is_some();
                r.created_user = true;
                r.created_group = r.created_group || !group_exists;
                rec.put(&r)?;
                users::useradd(&spec.root, &spec.name, &spec.sandbox_home, group_exists)?;
                let a = users::user(&spec.root, &spec.name)?.ok_or_else(|| {
                    Error::host(
                        format!("user {}", spec.name),
                        "useradd succeeded but the user cannot be found",
                        "check the passwd database (nsswitch.conf `passwd:`), then re-run",
                    )
                })?;
                out.push(format!(
                    "created system user {} (uid {}, gid {}), shell /bin/bash",
                    a.name, a.uid, a.gid
                ));
                a
            }
        };
        let who = Owner {
            uid: acct.uid,
            gid: acct.gid,
        };

        match fs::symlink_metadata(&h) {
            Ok(m) if m.file_type().is_symlink() => return Err(owner::symlink_refused(&h)),
            Ok(m) if !m.is_dir() => {
                return Err(Error::host(
                    h.display().to_string(),
                    "exists and is not a directory",
                    "move it away or pick another --sandbox-home, then re-run",
                ))
            }
            Ok(m) => {
                let mode = m.mode() & 0o7777;
                if r.created_home && (m.uid() != who.uid || m.gid() != who.gid || mode != HOME_MODE) {
                    owner::set(&h, true, HOME_MODE, who)?;
                    out.push(format!("reset owner and mode of {} ({:o})", h.display(), HOME_MODE));
                } else if mode & 0o022 != 0 {
                    let tight = mode & !0o022;
                    owner::set(
                        &h,
                        true,
                        tight,
                        Owner {
                            uid: m.uid(),
                            gid: m.gid(),
                        },
                    )?;
                    out.push(format!(
                        "{} was group- or world-writable: mode {:o} -> {:o}",
                        h.display(),
                        mode,
                        tight
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Write-ahead: the home and any parents it needs.
                r.created_home = true;
                let parent = h.parent().map(Path::to_path_buf);
                r.created_parents
                    .extend(parent.iter().flat_map(|p| files::missing_dirs(p)));
                rec.put(&r)?;
                if let Some(parent) = &parent {
                    files::create_dirs(parent, 0o755)?;
                }
                fs::create_dir(&h).map_err(|e| Error::io("create directory", &h, e))?;
                owner::set(&h, true, HOME_MODE, who)?;
                out.push(format!("created {} ({:o}, {})", h.display(), HOME_MODE, spec.name));
            }
            Err(e) => return Err(Error::io("stat", &h, e)),
        }

        // From here on the home is the agent's: only through AgentHome.
        let h_fd = home::open(spec)?;
        let at = HomeRef::of(spec, rec)?;
        let mut seeded = std::mem::take(&mut r.seeded);
        let wrote = home::apply_files(&h_fd, &at, &wanted_files(spec), &mut seeded, &mut |f| {
            r.seeded = FileSet {
                at: f.at.clone(),
                created_dirs: f.created_dirs.clone(),
                files: f.files.clone(),
            };
            rec.put(&r)
        })?;
        r.seeded = seeded;
        out.extend(wrote);
        rec.put(&r)?;
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        // The shell files are relative to the home and reached only through
        // the home-access layer, which confines them itself.
        crate::state::confine_home(&undo.root, &r.name, &r.home, &[], &r.created_parents)?;
        let mut out = Vec::new();
        out.extend(home::revert_files(undo, &r.seeded)?);
        if !undo.purge {
            out.push(format!(
                "kept user {}, its group and {} (they hold the operator's data; --disable --purge removes what setup created)",
                r.name,
                r.home.display()
            ));
            return Ok(out);
        }
        if r.created_home {
            match fs::symlink_metadata(&r.home) {
                Ok(m) if m.file_type().is_symlink() => {
                    out.push(format!("left {} alone: it is a symbolic link now", r.home.display()))
                }
                Ok(m) => {
                    // Only the sandbox user's own home: a record is never a
                    // way to make root remove another directory.
                    let uid = users::user(&undo.root, &r.name)?.map(|a| a.uid);
                    if uid.is_none_or(|u| u == 0 || u != m.uid()) {
                        out.push(format!(
                            "left {} alone: it is not the home of user {} (owner uid {})",
                            r.home.display(),
                            r.name,
                            m.uid()
                        ));
                    } else {
                        // remove_dir_all never follows symlinks inside the tree.
                        fs::remove_dir_all(&r.home).map_err(|e| Error::io("remove", &r.home, e))?;
                        out.push(format!("removed {} (--purge)", r.home.display()));
                    }
                }
                Err(_) => {}
            }
            files::remove_dirs(&r.created_parents)?;
        } else {
            out.push(format!("kept {}: it existed before setup", r.home.display()));
        }
        if r.created_user {
            if users::user(&undo.root, &r.name)?.is_some() {
                users::userdel(&undo.root, &r.name)?;
                out.push(format!("removed user {} (--purge)", r.name));
            }
        } else {
            out.push(format!("kept user {}: it existed before setup", r.name));
        }
        // userdel removes the user's own group only where login.defs says
        // USERGROUPS_ENAB; make sure of it.
        if r.created_group && users::group(&undo.root, &r.name)?.is_some() {
            users::groupdel(&undo.root, &r.name)?;
            out.push(format!("removed group {} (--purge)", r.name));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    #[test]
    fn bashrc_starts_openclaw_only_in_the_netns() {
        let s = bashrc(&spec(&["--name", "ci3", "--openclaw-port", "18800"]));
        assert!(s.contains("/run/netns/ci30"), "{s}");
        assert!(s.contains("exec openclaw gateway --port 18800"), "{s}");
        assert!(s.contains("*i*) ;;"), "only interactive shells: {s}");
        assert!(s.contains("SANDBOX_NO_OPENCLAW"), "{s}");
    }

    #[test]
    fn bash_profile_reads_bashrc() {
        assert!(bash_profile(&spec(&[])).contains(". \"$HOME/.bashrc\""));
    }
}
