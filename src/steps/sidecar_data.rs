//! Where the DefenseClaw gateway keeps its data for this sandbox, as the
//! real gateway finds it: `~<sidecar-user>/.defenseclaw/` when it runs as
//! an admin (`--sidecar-user`, or `SUDO_USER`), else the unit's
//! `StateDirectory=defenseclaw-<name>` (`/var/lib/private/…`, which
//! systemd hands to the unit's dynamic user at start; the unit sets
//! `DEFENSECLAW_HOME` to it). `config.yaml`, `.env` and `device.key` live
//! there.
//!
//! The admin's home is reached through the home-access layer as the admin
//! (never root's credentials in another user's home); the state directory
//! is root's own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::{Root, Spec};
use crate::sys::agent_home::{AgentHome, CONFIG_CAP};
use crate::sys::owner::Owner;
use crate::sys::{files, users};

/// Where the data directory is, as a record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataDir {
    /// `<home>/.defenseclaw` of this user.
    User { home: PathBuf, uid: u32, gid: u32 },
    /// A root-owned directory handed to a dynamic user by systemd.
    State { dir: PathBuf },
}

const REL: &str = ".defenseclaw";

impl DataDir {
    pub fn of(spec: &Spec) -> Result<DataDir> {
        match &spec.sidecar_user {
            Some(u) => {
                let a = users::user(&spec.root, u)?.ok_or_else(|| {
                    Error::host(
                        format!("sidecar user {u}"),
                        "does not exist",
                        "create it, or pass --sidecar-user with an existing account, then re-run",
                    )
                })?;
                Ok(DataDir::User {
                    home: spec.root.path(&a.home),
                    uid: a.uid,
                    gid: a.gid,
                })
            }
            None => Ok(DataDir::State {
                dir: state_dir(&spec.root, &spec.name),
            }),
        }
    }

    /// The directory, as the gateway sees it (for messages).
    pub fn path(&self) -> PathBuf {
        match self {
            DataDir::User { home, .. } => home.join(REL),
            DataDir::State { dir } => dir.clone(),
        }
    }

    /// Confined: a record may only name a non-root user's own home, or a
    /// state directory of ours under `root`.
    pub fn open(&self, root: &Root) -> Result<Opened> {
        match self {
            DataDir::User { home, uid, gid } => {
                if *uid == 0 {
                    return Err(Error::host(
                        home.display().to_string(),
                        "the sidecar user is root",
                        "the sidecar runs as an unprivileged admin or a dynamic user; pass --sidecar-user",
                    ));
                }
                Ok(Opened::User(AgentHome::open(home, Owner { uid: *uid, gid: *gid })?))
            }
            DataDir::State { dir } => {
                let base = root.path("/var/lib/private");
                let ours = dir.parent() == Some(base.as_path())
                    && dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("defenseclaw-"));
                if !ours {
                    return Err(Error::State {
                        path: dir.clone(),
                        cause: "is not a sidecar state directory".into(),
                        fix: "the record was edited; restore it from a backup".into(),
                    });
                }
                Ok(Opened::State(dir.clone()))
            }
        }
    }
}

/// `StateDirectory=defenseclaw-<name>` of a dynamic-user unit.
pub fn state_dir(root: &Root, name: &str) -> PathBuf {
    root.path(format!("/var/lib/private/defenseclaw-{name}"))
}

/// The data directory, opened.
pub enum Opened {
    User(AgentHome),
    State(PathBuf),
}

impl Opened {
    pub fn show(&self, name: &str) -> String {
        match self {
            Opened::User(h) => h.show(&Path::new(REL).join(name)),
            Opened::State(d) => d.join(name).display().to_string(),
        }
    }

    /// Make the directory (0700); returns whether it was made.
    pub fn make(&self) -> Result<Vec<PathBuf>> {
        match self {
            Opened::User(h) => h.make_dirs(Path::new(REL), 0o700),
            Opened::State(d) => files::create_dirs(d, 0o700),
        }
    }

    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Opened::User(h) => Ok(h.read(&Path::new(REL).join(name), CONFIG_CAP)?.map(|f| f.bytes)),
            Opened::State(d) => {
                let p = d.join(name);
                match std::fs::read(&p) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("read", p, e)),
                }
            }
        }
    }

    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        match self {
            Opened::User(h) => h.write(&Path::new(REL).join(name), bytes, mode),
            Opened::State(d) => files::write_atomic(&d.join(name), bytes, mode),
        }
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        match self {
            Opened::User(h) => h.remove_file(&Path::new(REL).join(name)).map(|_| ()),
            Opened::State(d) => match std::fs::remove_file(d.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove", d.join(name), e)),
            },
        }
    }

    pub fn remove_dirs(&self, made: &[PathBuf]) -> Result<()> {
        match self {
            Opened::User(h) => h.remove_dirs(made),
            Opened::State(_) => files::remove_dirs(made),
        }
    }
}
