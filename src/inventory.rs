//! What a setup puts on the host, object by object, each with its inverse:
//! the raw material of the change-control report (`sandbox plan`). Steps
//! fill it through `Step::inventory`; nothing here touches the host.

use std::path::Path;

use serde::Serialize;

use crate::sys::files;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Inventory {
    pub files: Vec<FileItem>,
    pub objects: Vec<ObjectItem>,
    pub rules: Vec<RuleItem>,
    pub tables: Vec<TableItem>,
    pub sysctls: Vec<SysctlItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileItem {
    pub step: &'static str,
    pub path: String,
    pub owner: String,
    pub mode: String,
    /// Of the content setup writes; "generated at apply" for secrets.
    pub sha256: String,
    pub inverse: String,
}

/// A user, namespace, link, address, route or unit.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectItem {
    pub step: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub detail: String,
    pub inverse: String,
}

/// One rule, in plain words: where it sits and what it does.
#[derive(Debug, Clone, Serialize)]
pub struct RuleItem {
    pub step: &'static str,
    /// "inside sandbox0" or "host".
    pub place: String,
    pub table: String,
    pub chain: String,
    pub words: String,
    pub verdict: String,
}

/// One whole table as nft text, exactly what is installed.
#[derive(Debug, Clone, Serialize)]
pub struct TableItem {
    pub step: &'static str,
    pub place: String,
    pub table: String,
    pub nft: String,
    pub inverse: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SysctlItem {
    pub step: &'static str,
    pub key: String,
    pub value: String,
    pub inverse: String,
}

impl Inventory {
    /// A file setup writes with known content.
    pub fn file(&mut self, step: &'static str, path: &Path, owner: &str, mode: u32, content: &[u8], inverse: &str) {
        self.files.push(FileItem {
            step,
            path: path.display().to_string(),
            owner: owner.into(),
            mode: format!("{mode:04o}"),
            sha256: files::sha256_hex(content),
            inverse: inverse.into(),
        });
    }

    /// A file whose content exists only at apply time (keys, tokens, patches).
    pub fn file_generated(
        &mut self,
        step: &'static str,
        path: &Path,
        owner: &str,
        mode: Option<u32>,
        what: &str,
        inverse: &str,
    ) {
        self.files.push(FileItem {
            step,
            path: path.display().to_string(),
            owner: owner.into(),
            mode: mode.map_or_else(|| "as found".into(), |m| format!("{m:04o}")),
            sha256: what.into(),
            inverse: inverse.into(),
        });
    }

    pub fn object(&mut self, step: &'static str, kind: &'static str, name: &str, detail: &str, inverse: &str) {
        self.objects.push(ObjectItem {
            step,
            kind,
            name: name.into(),
            detail: detail.into(),
            inverse: inverse.into(),
        });
    }

    pub fn table(&mut self, step: &'static str, place: &str, t: &crate::firewall::Table, inverse: &str) {
        for c in &t.chains {
            for r in &c.rules {
                self.rules.push(RuleItem {
                    step,
                    place: place.into(),
                    table: format!("inet {}", t.name),
                    chain: c.name.clone(),
                    words: r.why.clone(),
                    verdict: format!("{:?}", r.then).to_lowercase(),
                });
            }
        }
        self.tables.push(TableItem {
            step,
            place: place.into(),
            table: format!("inet {}", t.name),
            nft: crate::firewall::to_nft_text(t),
            inverse: inverse.into(),
        });
    }

    pub fn sysctl(&mut self, step: &'static str, key: &str, value: &str, inverse: &str) {
        self.sysctls.push(SysctlItem {
            step,
            key: key.into(),
            value: value.into(),
            inverse: inverse.into(),
        });
    }
}
