//! Extras shipped in the binary (from `src/assets/`): the CodeGuard skill
//! into `~sandbox/.openclaw/skills/codeguard/` and the DefenseClaw guardrail
//! plugin into `~sandbox/.openclaw/extensions/defenseclaw/`. Edited files are
//! kept; `--disable` removes the unchanged ones and the directories we made.

use std::path::PathBuf;

use super::home::SeededFiles;
use crate::spec::Spec;

pub struct Extras;

/// (path below the home, content).
pub const FILES: &[(&str, &str)] = &[
    (
        ".openclaw/skills/codeguard/SKILL.md",
        include_str!("../assets/codeguard/SKILL.md"),
    ),
    (
        ".openclaw/extensions/defenseclaw/openclaw.plugin.json",
        include_str!("../assets/defenseclaw-plugin/openclaw.plugin.json"),
    ),
    (
        ".openclaw/extensions/defenseclaw/package.json",
        include_str!("../assets/defenseclaw-plugin/package.json"),
    ),
    (
        ".openclaw/extensions/defenseclaw/index.js",
        include_str!("../assets/defenseclaw-plugin/index.js"),
    ),
];

impl SeededFiles for Extras {
    const ID: &'static str = "extras";
    const INVERSE: &'static str = "removed if unchanged";

    fn files(spec: &Spec) -> Vec<(PathBuf, String, u32)> {
        let _ = spec;
        FILES
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string(), 0o640))
            .collect()
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
                serde_json::from_str::<serde_json::Value>(t).unwrap_or_else(|e| panic!("{p}: {e}"));
            }
        }
        assert!(FILES[0].1.starts_with("---\nname: codeguard\n"), "skill front matter");
    }
}
