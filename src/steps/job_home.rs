//! A CI job's identity: its own uid (no account: the host record leases
//! a uid no other live job has) and its home, `<state dir>/home`, made by
//! root and owned by that uid (0700). The job runs with its cwd there.
//! Revert removes the home with whatever the job left in it (`job` gives
//! the lease back once every step is reverted). Only job sandboxes have this step.
//!
//! The job's processes must be gone before the revert (`job` kills every
//! process of the uid first): a live one could keep writing.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;

pub struct JobHome;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    home: PathBuf,
    uid: u32,
    name: String,
}

/// Below this directory (the sandbox's state directory under `--root`)
/// and nowhere else does the step make or remove a home.
fn anchor(root: &crate::spec::Root, name: &str) -> PathBuf {
    root.state_dir(name)
}

impl Step for JobHome {
    fn id(&self) -> &'static str {
        "job_home"
    }

    fn in_jobs(&self) -> bool {
        true
    }

    fn wanted(&self, spec: &Spec) -> bool {
        spec.is_job()
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        if let Some(j) = &spec.job {
            inv.object(
                self.id(),
                "directory",
                &j.home.display().to_string(),
                &format!("the job's home, owned by uid {} (0700)", j.uid),
                "removed with everything in it",
            );
        }
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let Some(j) = &spec.job else { return Ok(vec![]) };
        Ok(match std::fs::symlink_metadata(&j.home) {
            Ok(m) if m.is_dir() && m.uid() == j.uid => vec![],
            _ => vec![format!("create {} (0700, uid {})", j.home.display(), j.uid)],
        })
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let Some(j) = &spec.job else { return Ok(vec![]) };
        let home = &j.home;
        if home.parent() != Some(anchor(&spec.root, &spec.name).as_path()) {
            return Err(crate::state::outside(home, "not directly in the job's state directory"));
        }
        rec.put(&Record {
            home: home.clone(),
            uid: j.uid,
            name: spec.name.clone(),
        })?;
        match std::fs::symlink_metadata(home) {
            Ok(m) if m.is_dir() && !m.file_type().is_symlink() && m.uid() == j.uid => return Ok(vec![]),
            Ok(_) => {
                return Err(Error::host(
                    format!("job home {}", home.display()),
                    "exists and is not a directory owned by the job's uid",
                    format!("destroy the job (sandbox job destroy {}) and make it again", spec.name),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", home, e)),
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(home)
            .map_err(|e| Error::io("create", home, e))?;
        // Made by root inside root's 0700 state directory: nobody else can
        // swap it for a link between the mkdir and the chown.
        nix::unistd::chown(
            home,
            Some(nix::unistd::Uid::from_raw(j.uid)),
            Some(nix::unistd::Gid::from_raw(j.uid)),
        )
        .map_err(|e| Error::io("chown", home, e.into()))?;
        Ok(vec![format!("created {} (0700, uid {})", home.display(), j.uid)])
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let anchor = anchor(&undo.root, &r.name);
        if r.home.parent() != Some(anchor.as_path()) || r.home.file_name().is_none() {
            return Err(crate::state::outside(
                &r.home,
                "not directly in the job's state directory",
            ));
        }
        let mut out = Vec::new();
        match std::fs::symlink_metadata(&r.home) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                std::fs::remove_file(&r.home).map_err(|e| Error::io("remove", &r.home, e))?;
                out.push(format!("removed {}", r.home.display()));
            }
            // remove_dir_all does not follow links the job left inside.
            Ok(_) => {
                std::fs::remove_dir_all(&r.home).map_err(|e| Error::io("remove", &r.home, e))?;
                out.push(format!("removed {} and everything in it", r.home.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", &r.home, e)),
        }
        Ok(out)
    }
}
