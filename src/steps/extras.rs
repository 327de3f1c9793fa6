//! Extras shipped in the binary (from `src/assets/`): the CodeGuard skill
//! into `~sandbox/.claw/skills/codeguard/` and the DefenseClaw guardrail
//! plugin into `~sandbox/.claw/extensions/defenseclaw/`. Edited files are
//! kept; `--disable` removes the unchanged ones and the directories we made.

use std::path::PathBuf;

use serde_json::Value;

use super::home::{self, FileSet};
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::inventory::Inventory;
use crate::spec::Spec;

pub struct Extras;

/// (path below the home, content).
pub const FILES: &[(&str, &str)] = &[
    (
        ".claw/skills/codeguard/SKILL.md",
        include_str!("../assets/codeguard/SKILL.md"),
    ),
    (
        ".claw/extensions/defenseclaw/openclaw.plugin.json",
        include_str!("../assets/defenseclaw-plugin/openclaw.plugin.json"),
    ),
    (
        ".claw/extensions/defenseclaw/package.json",
        include_str!("../assets/defenseclaw-plugin/package.json"),
    ),
    (
        ".claw/extensions/defenseclaw/index.js",
        include_str!("../assets/defenseclaw-plugin/index.js"),
    ),
];

fn wanted(spec: &Spec) -> Vec<(PathBuf, String, u32)> {
    let h = home::dir(spec);
    FILES.iter().map(|(p, t)| (h.join(p), t.to_string(), 0o640)).collect()
}

impl Step for Extras {
    fn id(&self) -> &'static str {
        "extras"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        for (p, body, mode) in wanted(spec) {
            inv.file(self.id(), &p, &spec.name, mode, body.as_bytes(), "removed if unchanged");
        }
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let r = rec.and_then(|v| serde_json::from_value::<FileSet>(v.clone()).ok());
        home::plan_files(&wanted(spec), r.as_ref())
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let who = home::owner(spec)?;
        let mut r = rec.get::<FileSet>().unwrap_or_default();
        let out = home::apply_files(&home::dir(spec), &wanted(spec), who, &mut r, &mut |r| rec.put(r))?;
        rec.put(&r)?;
        Ok(out)
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        home::revert_files(&data(self.id(), v)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_files_are_well_formed() {
        for (p, t) in FILES {
            assert!(!t.trim().is_empty(), "{p}");
            if p.ends_with(".json") {
                serde_json::from_str::<Value>(t).unwrap_or_else(|e| panic!("{p}: {e}"));
            }
        }
        assert!(FILES[0].1.starts_with("---\nname: codeguard\n"), "skill front matter");
    }
}
