//! The config file of one sandbox, `/etc/sandbox/<name>.toml` (under
//! `--root`): every `setup` flag that describes the sandbox is a key of
//! the same name (`host_ip` for `--host-ip`). Flags and the file both fill
//! a [`SetupInput`]; merged (flag over file over default) into
//! [`Settings`], which remember where each value came from, so `plan` can
//! say it and a bad value is refused with its file, line and column.
//! `spec::Spec::from_settings` validates the merge into a `Spec`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::cli::SetupArgs;
use crate::error::{Error, Result};

/// The largest config file read (a real one is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Everything `setup` can be told about a sandbox. The config file is
/// this, as TOML; the command line fills one with the flags it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupInput {
    pub name: Option<String>,
    pub policy: Option<String>,
    pub sandbox_ip: Option<String>,
    pub host_ip: Option<String>,
    /// `"auto"` or a CIDR.
    pub subnet: Option<String>,
    pub subnet_pool: Option<String>,
    pub sandbox_home: Option<PathBuf>,
    #[serde(default, deserialize_with = "port")]
    pub openclaw_port: Option<u16>,
    /// `"host"`, `"8.8.8.8,1.1.1.1"`, or a list of addresses.
    #[serde(default, deserialize_with = "dns")]
    pub dns: Option<String>,
    pub no_auto_pair: Option<bool>,
    pub no_host_networking: Option<bool>,
    pub no_guardrail: Option<bool>,
    pub no_systemd: Option<bool>,
    pub agent_bin: Option<PathBuf>,
    pub sidecar_bin: Option<PathBuf>,
    /// `""` or `"root"`: a dynamic user.
    pub sidecar_user: Option<String>,
}

/// The keys, in the order `plan` lists them.
pub const KEYS: &[&str] = &[
    "name",
    "policy",
    "sandbox_ip",
    "host_ip",
    "subnet",
    "subnet_pool",
    "sandbox_home",
    "openclaw_port",
    "dns",
    "no_auto_pair",
    "no_host_networking",
    "no_guardrail",
    "no_systemd",
    "agent_bin",
    "sidecar_bin",
    "sidecar_user",
];

fn port<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u16>, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(serde::de::Error::custom(format!("{n} is not a port number (1-65535)"))),
    }
}

fn dns<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Dns {
        One(String),
        List(Vec<String>),
    }
    match Dns::deserialize(d) {
        Ok(Dns::One(s)) => Ok(Some(s)),
        Ok(Dns::List(v)) => Ok(Some(v.join(","))),
        Err(_) => Err(serde::de::Error::custom(
            "expected \"host\", a string of addresses separated by commas, or a list of address strings",
        )),
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum Source {
    Default,
    /// An environment variable (`SUDO_USER` for `sidecar_user`).
    Env {
        var: String,
    },
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    Flag {
        flag: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::Env { var } => write!(f, "environment {var}"),
            Source::File { path, line, column } => write!(f, "{}:{line}:{column}", path.display()),
            Source::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// The merged input and where each value came from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every key set (sidecar_user may be None: nobody in particular).
    pub input: SetupInput,
    pub sources: BTreeMap<&'static str, Source>,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
}

/// One row of `plan`'s "Settings".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingRow {
    pub key: String,
    pub value: String,
    pub source: Source,
}

/// `/etc/sandbox/<name>.toml` under `root`.
pub fn path_for(root: &Path, name: &str) -> PathBuf {
    root.join(format!("etc/sandbox/{name}.toml"))
}

fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// A config file, read and parsed: the input and each key's position.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub input: SetupInput,
    pub positions: BTreeMap<String, (usize, usize)>,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let shown = path.display();
        let bytes = crate::sys::bounded::read_regular(path, MAX_CONFIG_BYTES).map_err(|e| {
            Error::input(
                format!("config file {shown}"),
                format!("cannot read it: {e}"),
                format!(
                    "give a readable regular file of at most {} KiB (not a link, FIFO or device)",
                    MAX_CONFIG_BYTES / 1024
                ),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::input(
                format!("config file {shown}"),
                format!("not UTF-8 text: {e}"),
                "save it as UTF-8",
            )
        })?;
        ConfigFile::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile> {
        let input: SetupInput = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            Error::input(
                format!("config file {}, line {line}, column {col}", path.display()),
                e.message().trim().to_string(),
                format!(
                    "fix that key; the keys are the setup flags with `_` for `-`: {}",
                    KEYS.join(", ")
                ),
            )
        })?;
        // Parsed once more for the position of each value (the first
        // parse has proved the document well formed).
        let spans: BTreeMap<String, toml::Spanned<toml::Value>> = toml::from_str(text).unwrap_or_default();
        let positions = spans
            .into_iter()
            .map(|(k, v)| (k, line_col(text, v.span().start)))
            .collect();
        Ok(ConfigFile {
            path: path.to_path_buf(),
            input,
            positions,
        })
    }

    fn source(&self, key: &str) -> Source {
        let (line, column) = self.positions.get(key).copied().unwrap_or((1, 1));
        Source::File {
            path: self.path.clone(),
            line,
            column,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |p| before.len() - p - 1) + 1;
    (line, col)
}

impl SetupInput {
    /// What the command line says: only the flags it was given
    /// (`args.given`), or with `all`, every flag with clap's defaults.
    fn from_args(args: &SetupArgs, all: bool) -> SetupInput {
        let has = |key: &str| all || args.given.iter().any(|g| g == key);
        let pick = |key: &str, v: String| has(key).then_some(v);
        let bool_ = |key: &str, v: bool| has(key).then_some(v);
        SetupInput {
            name: pick("name", args.name.clone()),
            policy: pick("policy", args.policy.clone()),
            sandbox_ip: pick("sandbox_ip", args.sandbox_ip.clone()),
            host_ip: pick("host_ip", args.host_ip.clone()),
            subnet: if has("subnet") { args.subnet.clone() } else { None },
            subnet_pool: pick("subnet_pool", args.subnet_pool.clone()),
            // Its default is the name's (spec).
            sandbox_home: if has("sandbox_home") {
                args.sandbox_home.clone()
            } else {
                None
            },
            // Parsed (and refused) in `Settings::resolve`.
            openclaw_port: None,
            dns: pick("dns", args.dns.clone()),
            no_auto_pair: bool_("no_auto_pair", args.no_auto_pair),
            no_host_networking: bool_("no_host_networking", args.no_host_networking),
            no_guardrail: bool_("no_guardrail", args.no_guardrail),
            no_systemd: bool_("no_systemd", args.no_systemd),
            agent_bin: has("agent_bin").then(|| args.agent_bin.clone()),
            sidecar_bin: has("sidecar_bin").then(|| args.sidecar_bin.clone()),
            sidecar_user: if has("sidecar_user") {
                args.sidecar_user.clone()
            } else {
                None
            },
        }
    }

    /// Which keys are set.
    fn keys(&self) -> Vec<&'static str> {
        let v = serde_json::to_value(self).unwrap_or_default();
        KEYS.iter()
            .copied()
            .filter(|k| v.get(k).is_some_and(|x| !x.is_null()))
            .collect()
    }

    /// `self`, with what it leaves unset taken from `other`.
    fn or(self, other: SetupInput) -> SetupInput {
        SetupInput {
            name: self.name.or(other.name),
            policy: self.policy.or(other.policy),
            sandbox_ip: self.sandbox_ip.or(other.sandbox_ip),
            host_ip: self.host_ip.or(other.host_ip),
            subnet: self.subnet.or(other.subnet),
            subnet_pool: self.subnet_pool.or(other.subnet_pool),
            sandbox_home: self.sandbox_home.or(other.sandbox_home),
            openclaw_port: self.openclaw_port.or(other.openclaw_port),
            dns: self.dns.or(other.dns),
            no_auto_pair: self.no_auto_pair.or(other.no_auto_pair),
            no_host_networking: self.no_host_networking.or(other.no_host_networking),
            no_guardrail: self.no_guardrail.or(other.no_guardrail),
            no_systemd: self.no_systemd.or(other.no_systemd),
            agent_bin: self.agent_bin.or(other.agent_bin),
            sidecar_bin: self.sidecar_bin.or(other.sidecar_bin),
            sidecar_user: self.sidecar_user.or(other.sidecar_user),
        }
    }
}

/// The config file `setup` reads for `args`: `--config FILE`, else
/// `/etc/sandbox/<name>.toml` under `--root` when it exists.
pub fn file_for(args: &SetupArgs) -> Option<PathBuf> {
    if let Some(c) = &args.config {
        return Some(c.clone());
    }
    let p = path_for(&args.root, &args.name);
    // Only a name that could be a sandbox's makes a path (no `../`).
    let plain = args
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (plain && std::fs::symlink_metadata(&p).is_ok()).then_some(p)
}

impl Settings {
    /// Flags over the config file over defaults.
    pub fn resolve(args: &SetupArgs) -> Result<Settings> {
        let file = file_for(args).map(|p| ConfigFile::read(&p)).transpose()?;
        Settings::merge(args, file.as_ref())
    }

    pub fn merge(args: &SetupArgs, file: Option<&ConfigFile>) -> Result<Settings> {
        let mut flags = SetupInput::from_args(args, false);
        let mut defaults = SetupInput::from_args(args, true);
        // The flag is text (clap keeps it so, to refuse it with our words).
        let port = crate::spec::parse_port("--openclaw-port", &args.openclaw_port);
        if args.given.iter().any(|g| g == "openclaw_port") {
            flags.openclaw_port = Some(port?);
        } else {
            defaults.openclaw_port = port.ok();
        }
        let mut sources = BTreeMap::new();
        for k in KEYS {
            sources.insert(*k, Source::Default);
        }
        if args.given_env.iter().any(|g| g == "sidecar_user") {
            sources.insert(
                "sidecar_user",
                Source::Env {
                    var: "SUDO_USER".into(),
                },
            );
        }
        let mut from_file = SetupInput::default();
        if let Some(f) = file {
            let mut input = f.input.clone();
            // A relative policy path in the file is taken from the file's directory.
            if let (Some(p), Some(dir)) = (input.policy.as_mut(), f.path.parent()) {
                if p.contains('/') && !p.starts_with('/') {
                    *p = dir.join(&*p).to_string_lossy().into_owned();
                }
            }
            for k in input.keys() {
                sources.insert(k, f.source(k));
            }
            from_file = input;
        }
        for k in flags.keys() {
            sources.insert(k, Source::Flag { flag: flag_of(k) });
        }
        let input = flags.or(from_file).or(defaults);
        let settings = Settings {
            input,
            sources,
            file: file.map(|f| f.path.clone()),
        };
        settings.check_file_name(args)?;
        Ok(settings)
    }

    /// `/etc/sandbox/N.toml` read for `--name N` must not name another sandbox.
    fn check_file_name(&self, args: &SetupArgs) -> Result<()> {
        if args.config.is_some() {
            return Ok(());
        }
        match (&self.input.name, self.sources.get("name")) {
            (Some(n), Some(src @ Source::File { .. })) if *n != args.name => Err(Error::input(
                format!("config file {src}: name = {n:?}"),
                format!("the file for sandbox {} names sandbox {n}", args.name),
                format!("make it name = \"{}\", or remove the key", args.name),
            )),
            _ => Ok(()),
        }
    }

    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    /// An input error about a value from the config file, said with the
    /// file, line and column; others as they are. The key is the flag the
    /// error names (`--host-ip "x"` -> host_ip).
    pub fn locate(&self, e: Error) -> Error {
        let Error::Input { what, why, fix } = e else { return e };
        let key = what.split_whitespace().find_map(|w| w.strip_prefix("--")).map(|f| {
            f.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .replace('-', "_")
        });
        match key.as_deref().map(|k| (k, self.source(k))) {
            Some((k, src @ Source::File { .. })) => Error::Input {
                what: format!("config file {src}: {k} (`{what}`)"),
                why,
                fix: format!("{fix} (key {k} in {})", self.file_display()),
            },
            _ => Error::Input { what, why, fix },
        }
    }

    fn file_display(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "the config file".into(), |p| p.display().to_string())
    }

    /// Every key with its value and where it came from, for `plan`.
    pub fn rows(&self) -> Vec<SettingRow> {
        let v = serde_json::to_value(&self.input).unwrap_or_default();
        KEYS.iter()
            .map(|k| {
                let value = match v.get(k) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => "(none)".into(),
                    Some(other) => other.to_string(),
                };
                SettingRow {
                    key: k.to_string(),
                    value,
                    source: self.source(k),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(text, Path::new("/etc/sandbox/a.toml"))
    }

    #[test]
    fn every_key_parses() {
        let f = parse(
            "name = \"a\"\npolicy = \"strict\"\nsandbox_ip = \"10.9.0.2\"\nhost_ip = \"10.9.0.1\"\n\
             sandbox_home = \"/srv/a\"\nopenclaw_port = 18000\ndns = [\"9.9.9.9\", \"1.1.1.1\"]\n\
             no_auto_pair = true\nno_host_networking = false\nno_guardrail = true\nno_systemd = true\n\
             agent_bin = \"/opt/oc\"\nsidecar_bin = \"/opt/gw\"\nsidecar_user = \"admin\"\n\
             subnet = \"auto\"\nsubnet_pool = \"10.77.0.0/16\"\n",
        )
        .expect("parses");
        assert_eq!(f.input.keys().len(), KEYS.len());
        assert_eq!(f.input.dns.as_deref(), Some("9.9.9.9,1.1.1.1"));
        assert_eq!(f.input.openclaw_port, Some(18000));
        assert_eq!(f.positions.get("host_ip"), Some(&(4, 11)));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_line_and_column() {
        let cases = [
            (
                "policy = \"strict\"\nhost-ip = \"10.0.0.1\"\n",
                "line 2, column 1",
                "unknown field",
            ),
            ("openclaw_port = 70000\n", "line 1, column 17", "not a port"),
            ("\nno_guardrail = \"yes\"\n", "line 2, column 16", "bool"),
            ("dns = 53\n", "line 1, column 7", "expected \"host\""),
            ("policy = \n", "line 1", ""),
        ];
        for (text, at, why) in cases {
            let e = parse(text).expect_err(text);
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{msg}");
            assert!(msg.contains(&format!("/etc/sandbox/a.toml, {at}")), "{text:?}: {msg}");
            assert!(msg.contains(why), "{text:?}: {msg}");
            assert!(msg.contains("fix:"), "{msg}");
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let f = parse("policy = \"strict\"\nhost_ip = \"10.9.0.1\"\nno_guardrail = true\n").expect("parses");
        let args = crate::testutil::args(&["--host-ip", "10.9.0.5", "--no-guardrail=false"]);
        let s = Settings::merge(&args, Some(&f)).expect("merge");
        assert_eq!(s.input.policy.as_deref(), Some("strict"));
        assert_eq!(s.input.host_ip.as_deref(), Some("10.9.0.5"));
        assert_eq!(s.input.no_guardrail, Some(false));
        assert_eq!(s.input.sandbox_ip.as_deref(), Some("auto"));
        assert_eq!(s.source("policy").to_string(), "/etc/sandbox/a.toml:1:10");
        assert_eq!(s.source("host_ip").to_string(), "flag --host-ip");
        assert_eq!(s.source("no_guardrail").to_string(), "flag --no-guardrail");
        assert_eq!(s.source("sandbox_ip"), Source::Default);
    }

    #[test]
    fn a_bad_value_from_the_file_is_refused_where_it_stands() {
        let f = parse("\nhost_ip = \"10.9.0.300\"\n").expect("parses");
        let args = crate::testutil::args(&[]);
        let s = Settings::merge(&args, Some(&f)).expect("merge");
        let e = crate::spec::Spec::from_settings(&s, Path::new("/")).expect_err("bad ip");
        let msg = e.to_string();
        assert!(msg.contains("/etc/sandbox/a.toml:2:11: host_ip"), "{msg}");
        assert!(msg.contains("not an IPv4 address"), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }
}
