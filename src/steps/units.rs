//! The systemd units that run the sandbox and bring it back after a
//! reboot, rendered from the templates in `units/` (compiled in) into
//! `/etc/systemd/system/`, then reloaded, enabled (persistent links) and
//! started over D-Bus:
//!
//! | unit                                | what                                                   |
//! |-------------------------------------|--------------------------------------------------------|
//! | `defenseclaw-<name>.target`         | wants the three below; wanted by multi-user.target     |
//! | `sandbox-net@<name>.service`        | oneshot: `sandbox setup --boot` re-creates the in-memory network (netns, veth, nft, sysctl) from the state record |
//! | `defenseclaw-gateway@<name>.service`| the sidecar on the host IP, as the admin (`SUDO_USER`); the template is shared, a drop-in holds this sandbox's settings |
//! | `openshell-<name>.service`          | the agent as the sandbox user, in the netns, hardened   |
//!
//! `--no-systemd` (and any `--root` but `/`) writes the files and tells
//! nobody. `--disable`: stop, disable, remove our (unedited) files, reload.
//! The spec is kept in this step's record: `setup --boot` needs nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::host::{self, to_value, Resource};
use crate::spec::Spec;
use crate::state::{self, State};
use crate::sys::files;
use crate::sys::systemd::{self, Systemd};

pub struct Units;

pub const AGENT_TEMPLATE: &str = include_str!("../../units/openshell-sandbox.service");
pub const TARGET_TEMPLATE: &str = include_str!("../../units/defenseclaw-sandbox.target");
pub const NET_TEMPLATE: &str = include_str!("../../units/sandbox-net@.service");
pub const GATEWAY_TEMPLATE: &str = include_str!("../../units/defenseclaw-gateway@.service");
pub const GATEWAY_DROPIN_TEMPLATE: &str = include_str!("../../units/defenseclaw-gateway-instance.conf");
pub const RESOLVER_TEMPLATE: &str = include_str!("../../units/sandbox-resolver@.service");

/// Where unit files go (under `--root`).
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Longest wait for one start or stop job (a slow first start of the agent
/// included).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// After the target's job: give a service that dies at once the time to
/// show it, so setup reports it instead of calling it done.
const SETTLE: Duration = Duration::from_millis(1500);

pub fn agent_unit(name: &str) -> String {
    format!("openshell-{name}.service")
}
pub fn target_unit(name: &str) -> String {
    format!("defenseclaw-{name}.target")
}
pub fn gateway_unit(name: &str) -> String {
    format!("defenseclaw-gateway@{name}.service")
}
pub fn net_unit(name: &str) -> String {
    format!("sandbox-net@{name}.service")
}

/// The slice systemd makes for the instances of template `prefix@.service`.
pub fn template_slice(prefix: &str) -> String {
    format!("system-{}.slice", prefix.replace('-', "\\x2d"))
}

/// Our units, in the order they start (the target last). The resolver's
/// is there only for a policy that names hosts (or audit mode), but is
/// always stopped on revert.
fn all_units(name: &str) -> [String; 5] {
    [
        net_unit(name),
        super::resolver::unit(name),
        gateway_unit(name),
        agent_unit(name),
        target_unit(name),
    ]
}

/// The units this spec runs.
fn wanted_units(spec: &Spec) -> Vec<String> {
    let resolver = super::resolver::unit(&spec.name);
    all_units(&spec.name)
        .into_iter()
        .filter(|u| spec.uses_resolver() || *u != resolver)
        .collect()
}

/// What rendering needs beyond the spec (found on the host).
#[derive(Debug, Clone)]
pub struct Inputs {
    /// This program: `sandbox-net@.service` runs it at boot.
    pub sandbox_bin: PathBuf,
    /// The sidecar user's home, if the user is in `<root>/etc/passwd`.
    pub sidecar_home: Option<PathBuf>,
}

impl Inputs {
    pub fn detect(spec: &Spec) -> Result<Inputs> {
        let exe = std::env::current_exe().map_err(|e| Error::io("find own program", "/proc/self/exe", e))?;
        let sandbox_bin = std::fs::canonicalize(&exe).unwrap_or(exe);
        let sidecar_home = match &spec.sidecar_user {
            Some(u) => crate::sys::users::user(&spec.root, u)?.map(|a| a.home),
            None => None,
        };
        Ok(Inputs {
            sandbox_bin,
            sidecar_home,
        })
    }
}

/// One file we install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Relative to the unit directory.
    pub rel: String,
    pub body: String,
    /// A template every sandbox shares: removed only with the last one.
    pub shared: bool,
    /// The unit it configures.
    pub unit: String,
}

/// `{{key}}` -> value; a placeholder left over is a bug in a template.
pub fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(i) = s.find("{{") {
        let end = s[i..].find("}}").map_or(s.len(), |j| i + j + 2);
        return Err(Error::input(
            "unit template",
            format!("placeholder {} has no value", &s[i..end]),
            "report this as a bug",
        ));
    }
    Ok(s)
}

/// `prefix` + a path as one word of a unit-file list: quoted if the path
/// has spaces. Characters systemd would expand or split on are refused.
fn unit_word(flag: &str, prefix: &str, s: &str) -> Result<String> {
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@' | ' '));
    if !ok {
        return Err(Error::input(
            format!("{flag} {s:?}"),
            "has characters a unit file would expand or split on (% $ : \\ quotes or control characters)",
            format!("use a path of letters, digits, spaces and / . _ - + @ for {flag}"),
        ));
    }
    Ok(if s.contains(' ') {
        format!("\"{prefix}{s}\"")
    } else {
        format!("{prefix}{s}")
    })
}

/// Every file, rendered for this spec.
pub fn render(spec: &Spec, inputs: &Inputs) -> Result<Vec<UnitFile>> {
    let name = &spec.name;
    let home = spec.sandbox_home.to_string_lossy().into_owned();
    let side = spec.policy.sidecar;
    let sandbox_bin = inputs.sandbox_bin.to_string_lossy().into_owned();
    let vars: Vec<(&str, String)> = vec![
        ("name", name.clone()),
        ("netns", spec.net.netns.clone()),
        ("host_ip", spec.net.host_ip.to_string()),
        ("gateway_port", side.gateway_port.0.to_string()),
        ("openclaw_port", spec.openclaw_port.to_string()),
        ("home_env", unit_word("--sandbox-home", "HOME=", &home)?),
        ("home_bind", unit_word("--sandbox-home", "", &home)?),
        (
            "devices_rw",
            unit_word("--sandbox-home", "", &format!("{home}/.openclaw/devices"))?,
        ),
        (
            "agent_bin",
            unit_word("--agent-bin", "", &spec.agent_bin.to_string_lossy())?,
        ),
        (
            "sidecar_bin",
            unit_word("--sidecar-bin", "", &spec.sidecar_bin.to_string_lossy())?,
        ),
        ("sandbox_bin", unit_word("the sandbox program", "", &sandbox_bin)?),
        ("user_lines", sidecar_user_lines(spec, inputs)?),
        (
            "resolver_wants",
            if spec.uses_resolver() {
                format!(
                    "Wants={}\nAfter={}\n",
                    super::resolver::unit(name),
                    super::resolver::unit(name)
                )
            } else {
                String::new()
            },
        ),
        ("hardening", crate::hardening::unit_lines(crate::hardening::AGENT)),
    ];
    let file = |rel: String, template: &str, shared: bool, unit: String| -> Result<UnitFile> {
        Ok(UnitFile {
            rel,
            body: fill(template, &vars)?,
            shared,
            unit,
        })
    };
    let mut files = vec![
        file("sandbox-net@.service".into(), NET_TEMPLATE, true, net_unit(name))?,
        file(
            "defenseclaw-gateway@.service".into(),
            GATEWAY_TEMPLATE,
            true,
            gateway_unit(name),
        )?,
        file(
            format!("{}.d/sandbox.conf", gateway_unit(name)),
            GATEWAY_DROPIN_TEMPLATE,
            false,
            gateway_unit(name),
        )?,
        file(agent_unit(name), AGENT_TEMPLATE, false, agent_unit(name))?,
        file(target_unit(name), TARGET_TEMPLATE, false, target_unit(name))?,
    ];
    if spec.uses_resolver() {
        files.insert(
            1,
            file(
                "sandbox-resolver@.service".into(),
                RESOLVER_TEMPLATE,
                true,
                super::resolver::unit(name),
            )?,
        );
    }
    Ok(files)
}

fn sidecar_user_lines(spec: &Spec, inputs: &Inputs) -> Result<String> {
    Ok(match &spec.sidecar_user {
        Some(u) => {
            let mut s = format!("# The admin who set the sandbox up (--sidecar-user, or SUDO_USER).\nUser={u}");
            if let Some(h) = &inputs.sidecar_home {
                let rw = unit_word(
                    "the sidecar user's home",
                    "",
                    &format!("{}/.defenseclaw", h.to_string_lossy()),
                )?;
                s.push_str(&format!(
                    "\n# Its own DefenseClaw state (the rest of /home is read-only).\nReadWritePaths=-{rw}"
                ));
            }
            s
        }
        None => format!(
            "# Nobody ran sudo and no --sidecar-user was given: a user of its own,\n\
             # never root, whose DefenseClaw home is a state directory that setup\n\
             # prepared (systemd hands it to that user at start).\n\
             DynamicUser=yes\nStateDirectory=defenseclaw-{name}\nEnvironment=DEFENSECLAW_HOME=%S/defenseclaw-{name}",
            name = spec.name
        ),
    })
}

/// Problems that do not stop setup but will stop the units from running.
pub fn warnings(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for (what, flag, p) in [
        ("agent", "--agent-bin", &spec.agent_bin),
        ("sidecar", "--sidecar-bin", &spec.sidecar_bin),
    ] {
        if !is_executable(&spec.root.path(p)) {
            out.push(format!(
                "the {what} program {} is missing or not executable: its unit cannot start until it is installed (or pass {flag})",
                p.display()
            ));
        }
    }
    if let Some(u) = &spec.sidecar_user {
        if !matches!(crate::sys::users::user(&spec.root, u), Ok(Some(_))) {
            out.push(format!(
                "the sidecar user {u} (--sidecar-user or SUDO_USER) is not in {}: the gateway cannot start",
                spec.root.path("/etc/passwd").display()
            ));
        }
    }
    out
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether setup talks to systemd: not with `--no-systemd`, and not for a
/// tree under `--root` (no manager runs it).
pub fn talks_to_systemd(spec: &Spec) -> bool {
    spec.systemd && spec.root.0 == Path::new("/")
}

/// For preflight: a host whose systemd cannot be reached, when setup
/// would need it.
pub fn preflight(spec: &Spec) -> Vec<Error> {
    if !talks_to_systemd(spec) {
        return Vec::new();
    }
    match Systemd::connect() {
        Ok(_) => Vec::new(),
        Err(e) => vec![e],
    }
}

/// The spec the last setup ran with, from the state record (for
/// `setup --boot`).
pub fn saved_spec(state: &State) -> Result<Option<Spec>> {
    let Some(r) = state.get("units") else {
        return Ok(None);
    };
    let rec: Record = data("units", &r.data)?;
    Ok(rec.spec)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    name: String,
    /// The spec setup ran with: `setup --boot` re-creates the network from it.
    spec: Option<Spec>,
    dir: PathBuf,
    created_dirs: Vec<PathBuf>,
    files: Vec<FileRecord>,
    /// systemd was asked to reload/enable/start: `--disable` asks it to
    /// stop and disable.
    told_systemd: bool,
    /// Links `EnableUnitFiles` made, removed by hand should systemd be
    /// unreachable at `--disable`.
    links: Vec<PathBuf>,
    /// The sidecar's inputs, as a hash (see [`sidecar_inputs`]): when they
    /// change, it is restarted.
    #[serde(default)]
    sidecar_inputs: Option<String>,
}

/// What the running agent (main process `pid`) holds that is not as it is
/// now: it entered the namespace and bound the DNS files at its start, so
/// a namespace made anew or a changed file reaches it only through a
/// restart. Empty: it is current.
pub fn agent_staleness(spec: &Spec, pid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ns_path = spec.root.netns_path(&spec.net.netns);
    let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let mut stale = Vec::new();
    let held = id(&proc_dir.join("ns/net"));
    if held.is_none() || held != id(&ns_path) {
        stale.push(format!(
            "it runs in another network namespace than {}",
            ns_path.display()
        ));
    }
    for f in ["resolv.conf", "nsswitch.conf"] {
        let ours = std::fs::read(spec.root.path(format!("/etc/netns/{}/{f}", spec.net.netns))).ok();
        let seen = std::fs::read(proc_dir.join("root/etc").join(f)).ok();
        if ours.is_some() && ours != seen {
            stale.push(format!(
                "its /etc/{f} is not /etc/netns/{}/{f} as it is now",
                spec.net.netns
            ));
        }
    }
    stale
}

/// What the sidecar took in at its start and never reads again: its
/// config.yaml, .env and device key, as one hash.
fn sidecar_inputs(spec: &Spec) -> String {
    let mut sidecar = Vec::new();
    if let Ok(side) = super::sidecar_data::DataDir::of(spec).and_then(|d| d.open(&spec.root)) {
        for f in ["config.yaml", ".env", "device.key"] {
            let h = side
                .read(f)
                .ok()
                .flatten()
                .map(|b| files::sha256_hex(&b))
                .unwrap_or_default();
            sidecar.extend(format!("{f} {h}\n").into_bytes());
        }
    }
    files::sha256_hex(&sidecar)
}

/// What the first sandbox found of the shared templates: the host
/// record's original for them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Templates {
    files: Vec<SharedTemplate>,
    /// The unit directory and its parents, if it made them.
    #[serde(default)]
    created_dirs: Vec<PathBuf>,
}

/// What was at a shared template's path before the first sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedTemplate {
    path: PathBuf,
    previous: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileRecord {
    path: PathBuf,
    sha256: String,
    /// What was there before our first write (restored on revert).
    previous: Option<String>,
    shared: bool,
}

fn unit_dir(spec: &Spec) -> PathBuf {
    spec.root.path(UNIT_DIR)
}

fn not_told(spec: &Spec) -> String {
    if spec.systemd {
        format!(
            "systemd not told: --root {} is not a running system",
            spec.root.0.display()
        )
    } else {
        "systemd not told (--no-systemd): run `systemctl daemon-reload && systemctl enable --now <target>` yourself"
            .replace("<target>", &target_unit(&spec.name))
    }
}

impl Step for Units {
    fn id(&self) -> &'static str {
        "units"
    }

    fn preflight(&self, spec: &Spec) -> Vec<Error> {
        preflight(spec)
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let dir = unit_dir(spec);
        let mut out = Vec::new();
        for f in render(spec, &Inputs::detect(spec)?)? {
            let p = dir.join(&f.rel);
            let sha = files::sha256_hex(f.body.as_bytes());
            if files::hash_of(&p)?.as_deref() != Some(&sha) {
                out.push(format!("write {} (0644, sha256 {})", p.display(), &sha[..12]));
            }
        }
        if !talks_to_systemd(spec) {
            if !out.is_empty() {
                out.push(not_told(spec));
            }
            return Ok(out);
        }
        let sd = Systemd::connect()?;
        let name = &spec.name;
        if !out.is_empty() {
            out.push("reload systemd".into());
        }
        if sd.file_state(&target_unit(name))?.as_deref() != Some("enabled") {
            out.push(format!(
                "enable {} (persistent link in multi-user.target.wants)",
                target_unit(name)
            ));
        }
        let mut down = Vec::new();
        for u in wanted_units(spec) {
            if !sd.state(&u)?.is_active() {
                down.push(u);
            }
        }
        if !down.is_empty() {
            out.push(format!(
                "start {} (now inactive: {})",
                target_unit(name),
                down.join(", ")
            ));
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let name = &spec.name;
        let wanted = render(spec, &Inputs::detect(spec)?)?;
        let dir = unit_dir(spec);
        let mut r = rec.get::<Record>().unwrap_or_default();
        r.name = name.clone();
        r.spec = Some(spec.clone());
        r.dir = dir.clone();
        rec.put(&r)?;
        // The shared templates are the host's: the first sandbox records
        // what was at their paths, the last one puts it back.
        host::with(&spec.root, |h| {
            h.hold(Resource::UnitTemplates, name, || {
                let mut found = Templates {
                    created_dirs: files::missing_dirs(&dir),
                    ..Templates::default()
                };
                for f in wanted.iter().filter(|f| f.shared) {
                    let path = dir.join(&f.rel);
                    found.files.push(SharedTemplate {
                        previous: files::previous_content(&path)?,
                        path,
                    });
                }
                to_value(found)
            })
        })?;
        let mut out = Vec::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for f in &wanted {
            let path = dir.join(&f.rel);
            if let Some(parent) = path.parent() {
                // Write-ahead: recorded before they exist, or a run killed
                // in between leaves them unrecorded.
                let missing: Vec<PathBuf> = files::missing_dirs(parent)
                    .into_iter()
                    .filter(|d| !r.created_dirs.contains(d))
                    .collect();
                if !missing.is_empty() {
                    r.created_dirs.extend(missing);
                    rec.put(&r)?;
                }
                files::create_dirs(parent, 0o755)?;
            }
            let sha = files::sha256_hex(f.body.as_bytes());
            let current = files::hash_of(&path)?;
            let known = r.files.iter().position(|k| k.path == path);
            if current.as_deref() == Some(&sha) {
                if known.is_none() {
                    // Identical bytes: ours from a run whose record is
                    // gone, or a template another sandbox wrote.
                    r.files.push(FileRecord {
                        path,
                        sha256: sha,
                        previous: None,
                        shared: f.shared,
                    });
                    rec.put(&r)?;
                }
                continue;
            }
            match known {
                Some(i) => r.files[i].sha256 = sha.clone(),
                None => {
                    let previous = files::previous_content(&path)?;
                    r.files.push(FileRecord {
                        path: path.clone(),
                        sha256: sha.clone(),
                        previous,
                        shared: f.shared,
                    });
                }
            }
            rec.put(&r)?;
            files::write_atomic(&path, f.body.as_bytes(), 0o644)?;
            out.push(format!("wrote {}", path.display()));
            changed.insert(f.unit.clone());
        }
        if !talks_to_systemd(spec) {
            if !out.is_empty() {
                out.push(not_told(spec));
            }
            return Ok(out);
        }

        let mut sd = Systemd::connect()?;
        if !r.told_systemd {
            r.told_systemd = true;
            rec.put(&r)?;
        }
        if !out.is_empty() {
            sd.reload()?;
            out.push("reloaded systemd".into());
        }
        let target = target_unit(name);
        if sd.file_state(&target)?.as_deref() != Some("enabled") {
            let links = sd.enable(&[&target])?;
            for l in links.iter().filter(|l| l.kind == "symlink") {
                if !r.links.contains(&l.link) {
                    r.links.push(l.link.clone());
                }
            }
            rec.put(&r)?;
            let shown: Vec<String> = links.iter().map(|l| l.link.display().to_string()).collect();
            out.push(format!("enabled {target} ({})", shown.join(", ")));
        }
        // A running service whose unit or inputs changed runs on the old
        // ones: restart it.
        let sidecar_now = sidecar_inputs(spec);
        let mut why: BTreeMap<String, &str> = BTreeMap::new();
        if r.sidecar_inputs.as_ref().is_some_and(|old| *old != sidecar_now) {
            why.insert(gateway_unit(name), "its config.yaml, .env or device key changed");
        }
        // The agent: against what its running process holds, which also
        // covers a namespace re-made at boot under a recorded one.
        let agent_pid = sd.main_pid(&agent_unit(name)).unwrap_or(0);
        if agent_pid != 0 && !agent_staleness(spec, agent_pid).is_empty() {
            why.insert(agent_unit(name), "its namespace or DNS files changed");
        }
        let resolver = super::resolver::unit(name);
        if spec.uses_resolver() && why.contains_key(&agent_unit(name)) {
            // Its socket is in the old namespace: it quits and systemd
            // retries while the veth is being made anew, maybe until its
            // start limit. Now that the network is whole, start it afresh,
            // before the agent that needs it.
            sd.reset_failed(&resolver);
            let result = sd.restart(&resolver, JOB_TIMEOUT)?;
            out.push(format!(
                "restarted {resolver} (its namespace was made anew; job {result})"
            ));
        }
        for u in [gateway_unit(name), agent_unit(name)] {
            let reason = if changed.contains(&u) {
                Some("its unit changed")
            } else {
                why.get(&u).copied()
            };
            if let Some(reason) = reason {
                if sd.state(&u)?.is_active() {
                    let result = sd.restart(&u, JOB_TIMEOUT)?;
                    out.push(format!("restarted {u} ({reason}; job {result})"));
                }
            }
        }
        if r.sidecar_inputs.as_ref() != Some(&sidecar_now) {
            r.sidecar_inputs = Some(sidecar_now);
            rec.put(&r)?;
        }
        let mut down = Vec::new();
        for u in wanted_units(spec) {
            if !sd.state(&u)?.is_active() {
                down.push(u);
            }
        }
        if !down.is_empty() {
            // A unit that hit its start limit (the resolver while its
            // network was down, say) starts again only once forgiven.
            for u in &down {
                sd.reset_failed(u);
            }
            let result = sd.start(&target, JOB_TIMEOUT)?;
            std::thread::sleep(SETTLE);
            check_running(&mut sd, spec)?;
            out.push(format!("started {target} ({}; job {result})", down.join(", ")));
        }
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        // Only in the unit directory, whatever an altered record says.
        let unit_dir = undo.root.path(UNIT_DIR);
        let allowed = std::slice::from_ref(&unit_dir);
        state::confine(&r.dir, allowed)?;
        for p in r.files.iter().map(|f| &f.path).chain(&r.links) {
            state::confine(p, allowed)?;
        }
        state::confine_dirs(&r.created_dirs, &undo.root, &unit_dir)?;
        let name = &r.name;
        let mut out = Vec::new();
        let sd = if r.told_systemd {
            stop_and_disable(&r.dir, name, &mut out)?
        } else {
            None
        };
        // Links left (systemd unreachable, or a crash in between): ours
        // only, i.e. pointing at a file we wrote.
        for link in &r.links {
            let ours = std::fs::read_link(link).is_ok_and(|t| r.files.iter().any(|f| f.path == t));
            if ours {
                std::fs::remove_file(link).map_err(|e| Error::io("remove link", link, e))?;
                out.push(format!("removed link {}", link.display()));
            }
        }
        for f in r.files.iter().rev().filter(|f| !f.shared) {
            out.extend(files::undo_write(&f.path, &f.sha256, f.previous.as_deref(), 0o644)?);
        }
        files::remove_dirs(&r.created_dirs)?;
        let shared: Vec<&FileRecord> = r.files.iter().filter(|f| f.shared).collect();
        out.extend(host::with(&undo.root, |h| {
            let restore = |originals: Templates| -> Result<Vec<String>> {
                let mut said = Vec::new();
                for f in &shared {
                    state::confine(&f.path, std::slice::from_ref(&unit_dir))?;
                    // What the first sandbox found there; a record from
                    // before the host scope knows only its own.
                    let previous = originals
                        .files
                        .iter()
                        .find(|o| o.path == f.path)
                        .map_or(f.previous.as_deref(), |o| o.previous.as_deref());
                    said.extend(files::undo_write(&f.path, &f.sha256, previous, 0o644)?);
                }
                state::confine_dirs(&originals.created_dirs, &undo.root, &unit_dir)?;
                // After this sandbox's own directories: only empty ones go.
                files::remove_dirs(&originals.created_dirs)?;
                Ok(said)
            };
            if !h.knows(Resource::UnitTemplates) {
                // Made before the host scope and never adopted: the old
                // rule, the last drop-in removes the templates.
                let users = other_instances(&r.dir, name)?;
                if users.is_empty() {
                    return restore(Templates::default());
                }
                return Ok(vec![format!(
                    "kept the unit templates: sandbox {} still uses them",
                    users.join(", ")
                )]);
            }
            h.release(Resource::UnitTemplates, name, |v| {
                restore(serde_json::from_value(v.clone()).map_err(|e| host::bad_original("unit-templates", e))?)
            })
        })?);
        reload_without_us(sd.as_ref(), name, &mut out)?;
        Ok(out)
    }

    fn sweep(&self, undo: &Undo, name: &str) -> Result<Vec<String>> {
        let mut out = sweep_units(&undo.root, name)?;
        // The templates went with the files of our mark if no other
        // sandbox had a drop-in; the directories the first one made go
        // with the last holder.
        let unit_dir = undo.root.path(UNIT_DIR);
        out.extend(host::with(&undo.root, |h| {
            h.release(Resource::UnitTemplates, name, |v| {
                let t: Templates =
                    serde_json::from_value(v.clone()).map_err(|e| host::bad_original("unit-templates", e))?;
                state::confine_dirs(&t.created_dirs, &undo.root, &unit_dir)?;
                files::remove_dirs(&t.created_dirs)?;
                Ok(Vec::new())
            })
        })?);
        Ok(out)
    }
}

/// Ask systemd to stop our units (the agent first, the network last) and
/// the templates' slices with the last sandbox, and to disable the
/// target. None (said in `out`) when systemd cannot be reached.
fn stop_and_disable(dir: &Path, name: &str, out: &mut Vec<String>) -> Result<Option<Systemd>> {
    let mut s = match Systemd::connect() {
        Ok(s) => s,
        Err(e) => {
            out.push(format!(
                "could not reach systemd ({}); removing its links by hand; units still running stop at the next reboot",
                e.to_string().lines().next().unwrap_or_default()
            ));
            return Ok(None);
        }
    };
    for u in all_units(name).iter().rev() {
        let st = s.state(u)?;
        if st.active != "inactive" {
            let result = s.stop(u, JOB_TIMEOUT)?;
            out.push(format!(
                "stopped {u} (was {st}; job {})",
                result.as_deref().unwrap_or("none")
            ));
        }
    }
    if other_instances(dir, name)?.is_empty() {
        for slice in [
            template_slice("sandbox-net"),
            template_slice("sandbox-resolver"),
            template_slice("defenseclaw-gateway"),
        ] {
            if s.state(&slice)?.active != "inactive" {
                s.stop(&slice, JOB_TIMEOUT)?;
                out.push(format!("stopped {slice} (now empty)"));
            }
        }
    }
    let target = target_unit(name);
    if s.file_state(&target)?.is_some_and(|st| st == "enabled") {
        let links = s.disable(&[&target])?;
        let shown: Vec<String> = links.iter().map(|l| l.link.display().to_string()).collect();
        out.push(format!("disabled {target} (removed {})", shown.join(", ")));
    }
    Ok(Some(s))
}

/// The first line of every file we write (`# Written by \`sandbox setup`).
const MARK: &str = "# Written by `sandbox setup";

/// Whether `path` starts with our mark; None when it does not exist.
fn marked(path: &Path) -> Result<Option<bool>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t.starts_with(MARK))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // Not text: not ours.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(Some(false)),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// `--disable` without a record: what is named after `name` and starts
/// with our mark goes (systemd told first), the shared templates with the
/// last sandbox; anything else of that name is left and named.
fn sweep_units(root: &crate::spec::Root, name: &str) -> Result<Vec<String>> {
    let dir = root.path(UNIT_DIR);
    let dropin_dir = dir.join(format!("{}.d", gateway_unit(name)));
    let own = [
        dir.join(target_unit(name)),
        dir.join(agent_unit(name)),
        dropin_dir.join("sandbox.conf"),
    ];
    let mut ours = Vec::new();
    let mut out = Vec::new();
    for p in &own {
        match marked(p)? {
            Some(true) => ours.push(p.clone()),
            Some(false) => out.push(format!("left {}: it lacks our header line", p.display())),
            None => {}
        }
    }
    let shared: Vec<PathBuf> = [
        "sandbox-net@.service",
        "sandbox-resolver@.service",
        "defenseclaw-gateway@.service",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let lonely = other_instances(&dir, name)?.is_empty();
    let shared_ours: Vec<&PathBuf> = if lonely {
        shared.iter().filter(|p| matches!(marked(p), Ok(Some(true)))).collect()
    } else {
        Vec::new()
    };
    if ours.is_empty() && shared_ours.is_empty() {
        return Ok(out);
    }
    let sd = if root.0 == Path::new("/") && !ours.is_empty() {
        stop_and_disable(&dir, name, &mut out)?
    } else {
        None
    };
    let link = dir.join("multi-user.target.wants").join(target_unit(name));
    if std::fs::read_link(&link).is_ok_and(|t| t.starts_with(&dir) || t.starts_with(UNIT_DIR)) {
        std::fs::remove_file(&link).map_err(|e| Error::io("remove link", &link, e))?;
        out.push(format!("removed link {}", link.display()));
    }
    for p in ours.iter().chain(shared_ours) {
        std::fs::remove_file(p).map_err(|e| Error::io("remove", p, e))?;
        out.push(format!("removed {} (our header line)", p.display()));
    }
    // Directories we may have made: only if empty.
    files::remove_dirs(&[
        root.path("/etc/systemd"),
        dir.clone(),
        dir.join("multi-user.target.wants"),
        dropin_dir,
    ])?;
    reload_without_us(sd.as_ref(), name, &mut out)?;
    Ok(out)
}

/// Our files are gone: forget our units' failed states and reload.
fn reload_without_us(sd: Option<&Systemd>, name: &str, out: &mut Vec<String>) -> Result<()> {
    if let Some(s) = sd {
        for u in all_units(name) {
            s.reset_failed(&u);
        }
        s.reload()?;
        out.push("reloaded systemd".into());
    }
    Ok(())
}

/// Other sandboxes whose gateway drop-in sits next to ours: they still
/// need the shared templates.
fn other_instances(dir: &Path, name: &str) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if let Some(inst) = n
            .strip_prefix("defenseclaw-gateway@")
            .and_then(|s| s.strip_suffix(".service.d"))
        {
            if !inst.is_empty() && inst != name {
                out.push(inst.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// After the target's start job: every unit of ours runs, or the error
/// names each one that does not, its state, and what to do.
fn check_running(sd: &mut Systemd, spec: &Spec) -> Result<()> {
    let name = &spec.name;
    let mut bad = Vec::new();
    let mut fixes = Vec::new();
    for u in wanted_units(spec) {
        let st = sd.state(&u)?;
        if st.is_active() {
            continue;
        }
        bad.push(format!("{u} is {st}"));
        let program = if u == agent_unit(name) {
            Some(("agent", "--agent-bin", &spec.agent_bin))
        } else if u == gateway_unit(name) {
            Some(("sidecar", "--sidecar-bin", &spec.sidecar_bin))
        } else {
            None
        };
        let missing_user = spec
            .sidecar_user
            .as_ref()
            .filter(|who| u == gateway_unit(name) && !matches!(crate::sys::users::user(&spec.root, who), Ok(Some(_))));
        match (program, missing_user) {
            (Some((what, flag, p)), _) if !is_executable(p) => fixes.push(format!(
                "the {what} program {} is missing: install it or pass {flag}, then re-run setup",
                p.display()
            )),
            (_, Some(who)) => fixes.push(format!(
                "the sidecar user {who} (--sidecar-user, or SUDO_USER) does not exist: create it or pass --sidecar-user, then re-run setup"
            )),
            _ => fixes.push(systemd::journal_hint(&u)),
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(Error::Systemd {
        op: "StartUnit",
        unit: target_unit(name),
        cause: bad.join("; "),
        fix: fixes.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command as Proc;

    fn spec(extra: &[&str]) -> Spec {
        let mut flags = Vec::new();
        if !extra.contains(&"--sidecar-user") {
            flags.extend_from_slice(&["--sidecar-user", "admin"]);
        }
        flags.extend_from_slice(extra);
        crate::testutil::spec(&flags)
    }

    /// The units step applied with --no-systemd under a fresh --root.
    struct Applied {
        _dir: tempfile::TempDir,
        s: Spec,
        store: crate::state::Store,
        state: crate::state::State,
        steps: Vec<Box<dyn Step>>,
        first: Vec<crate::engine::Outcome>,
    }

    fn applied(flags: &[&str]) -> Applied {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_str().expect("utf8").to_string();
        let mut all = vec!["--root", root.as_str(), "--no-systemd"];
        all.extend_from_slice(flags);
        let s = spec(&all);
        let (store, mut state) = crate::state::Store::open(&s.root, &s.name).expect("open");
        let steps: Vec<Box<dyn Step>> = vec![Box::new(Units)];
        let first = crate::engine::apply_all(&steps, &s, &store, &mut state, &mut |_| {}).expect("apply");
        Applied {
            _dir: dir,
            s,
            store,
            state,
            steps,
            first,
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            sandbox_bin: "/usr/local/sbin/sandbox".into(),
            sidecar_home: Some("/home/admin".into()),
        }
    }

    fn body<'a>(files: &'a [UnitFile], rel: &str) -> &'a str {
        files
            .iter()
            .find(|f| f.rel == rel)
            .map(|f| f.body.as_str())
            .unwrap_or_else(|| panic!("{rel} not rendered"))
    }

    /// Render `spec` into `dir` with programs that exist (verify checks
    /// that ExecStart= is executable).
    fn render_into(dir: &Path, spec_args: &[&str]) -> Vec<UnitFile> {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        for p in ["openclaw", "defenseclaw-gateway", "sandbox"] {
            std::fs::write(bin.join(p), "#!/bin/sh\n").expect("w");
            std::fs::set_permissions(bin.join(p), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let agent = bin.join("openclaw");
        let side = bin.join("defenseclaw-gateway");
        let mut args = vec![
            "--agent-bin",
            agent.to_str().expect("utf8"),
            "--sidecar-bin",
            side.to_str().expect("utf8"),
        ];
        args.extend_from_slice(spec_args);
        let s = spec(&args);
        let inp = Inputs {
            sandbox_bin: bin.join("sandbox"),
            sidecar_home: Some("/home/admin".into()),
        };
        let files = render(&s, &inp).expect("render");
        let units = dir.join("system");
        for f in &files {
            let p = units.join(&f.rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &f.body).expect("write");
        }
        files
    }

    fn analyze(args: &[&str], dir: &Path) -> std::process::Output {
        match Proc::new("systemd-analyze").args(args).current_dir(dir).output() {
            Ok(o) => o,
            Err(e) => panic!("systemd-analyze is needed to check the units ({e}): apt-get install systemd"),
        }
    }

    #[test]
    fn template_slices_are_named_as_systemd_escapes_them() {
        assert_eq!(template_slice("sandbox-net"), "system-sandbox\\x2dnet.slice");
        assert_eq!(
            template_slice("defenseclaw-gateway"),
            "system-defenseclaw\\x2dgateway.slice"
        );
    }

    #[test]
    fn templates_have_every_placeholder_filled() {
        for (extra, n) in [
            (&[][..], 6),
            (&["--policy", "strict", "--name", "ci3"], 5),
            (&["--no-guardrail"], 6),
        ] {
            let files = render(&spec(extra), &inputs()).expect("render");
            assert_eq!(files.len(), n, "{extra:?}: the resolver's template only with names");
            for f in &files {
                assert!(!f.body.contains("{{"), "{}: {}", f.rel, f.body);
                assert!(f.body.ends_with('\n'), "{}", f.rel);
            }
        }
        let e = fill("a {{nope}} b", &[]).expect_err("left over");
        assert!(e.to_string().contains("{{nope}}"), "{e}");
    }

    #[test]
    fn agent_unit_is_in_the_netns_with_its_dns_and_no_doors() {
        let files = render(&spec(&["--policy", "strict", "--name", "ci3"]), &inputs()).expect("render");
        let a = body(&files, "openshell-ci3.service");
        for needle in [
            "User=ci3\n",
            "NetworkNamespacePath=/run/netns/ci30\n",
            "/etc/netns/ci30/resolv.conf:/etc/resolv.conf",
            "/etc/netns/ci30/nsswitch.conf:/etc/nsswitch.conf",
            "TemporaryFileSystem=/run:ro\n",
            "NoNewPrivileges=yes\n",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service\n",
            "ProtectSystem=strict\n",
            "ExecStart=/usr/local/bin/openclaw gateway --port 18789\n",
            "Requires=sandbox-net@ci3.service\n",
        ] {
            assert!(a.contains(needle), "{needle:?} missing in\n{a}");
        }
        let t = body(&files, "defenseclaw-ci3.target");
        assert!(t.contains("WantedBy=multi-user.target"), "{t}");
        assert!(t.contains("Wants=sandbox-net@ci3.service defenseclaw-gateway@ci3.service openshell-ci3.service"));
        let n = body(&files, "sandbox-net@.service");
        assert!(n.contains("ExecStart=/usr/local/sbin/sandbox setup --boot --non-interactive --name %i"));
        let d = body(&files, "defenseclaw-gateway@ci3.service.d/sandbox.conf");
        assert!(
            d.contains("User=admin\n") && !d.contains("DEFENSECLAW_LISTEN_HOST"),
            "{d}"
        );
        assert!(d.contains("ReadWritePaths=-/home/admin/.defenseclaw"), "{d}");
        assert!(d.contains("SupplementaryGroups=ci3\n"), "{d}");
    }

    #[test]
    fn shared_templates_do_not_depend_on_the_sandbox() {
        let a = render(
            &spec(&["--name", "one", "--host-ip", "10.9.0.1", "--sandbox-ip", "10.9.0.2"]),
            &inputs(),
        )
        .expect("one");
        let b = render(&spec(&["--name", "two", "--policy", "default"]), &inputs()).expect("two");
        for f in a.iter().filter(|f| f.shared) {
            assert_eq!(f.body, body(&b, &f.rel), "{} differs between sandboxes", f.rel);
        }
    }

    #[test]
    fn no_sudo_user_gets_a_dynamic_user_and_no_policy_gets_an_ip_list() {
        let mut s = spec(&["--policy", "permissive"]);
        s.sidecar_user = None;
        let files = render(&s, &inputs()).expect("render");
        let d = body(&files, "defenseclaw-gateway@sandbox.service.d/sandbox.conf");
        assert!(d.contains("DynamicUser=yes") && !d.contains("User=admin"), "{d}");
        // A cgroup IP filter would drop the namespace's own TCP resets and
        // ICMP errors (their source is the refused address): refusals must
        // stay immediate, so the nftables rules alone decide.
        for p in ["strict", "default", "permissive"] {
            let files = render(&spec(&["--policy", p]), &inputs()).expect("render");
            let a = body(&files, "openshell-sandbox.service");
            assert!(!a.lines().any(|l| l.starts_with("IPAddress")), "{p}: {a}");
        }
    }

    #[test]
    fn homes_with_spaces_are_quoted_and_specials_refused() {
        let files = render(&spec(&["--sandbox-home", "/srv/ci 3"]), &inputs()).expect("render");
        let a = body(&files, "openshell-sandbox.service");
        assert!(a.contains("BindPaths=\"/srv/ci 3\"\n"), "{a}");
        assert!(a.contains("Environment=\"HOME=/srv/ci 3\"\n"), "{a}");
        let e = render(&spec(&["--sandbox-home", "/srv/%i"]), &inputs()).expect_err("refused");
        assert!(
            e.to_string().contains("--sandbox-home") && e.to_string().contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn rendered_units_pass_systemd_analyze_verify() {
        let cases: [&[&str]; 4] = [
            &["--policy", "strict"],
            // The resolver's unit too.
            &["--policy", "strict", "--mode", "audit"],
            &["--sandbox-home", "/srv/ci 3", "--name", "ci3", "--no-guardrail"],
            // No SUDO_USER: the sidecar gets a dynamic user.
            &["--sidecar-user", "root", "--policy", "permissive"],
        ];
        for extra in cases {
            let d = tempfile::tempdir().expect("tempdir");
            let files = render_into(d.path(), extra);
            let sys = d.path().join("system");
            let name = files
                .iter()
                .find(|f| f.rel.ends_with(".target"))
                .map(|f| {
                    f.rel
                        .trim_start_matches("defenseclaw-")
                        .trim_end_matches(".target")
                        .to_string()
                })
                .expect("target");
            let mut args = vec!["verify".to_string(), "--man=no".to_string()];
            let with_resolver = files.iter().any(|f| f.rel == "sandbox-resolver@.service");
            for u in all_units(&name) {
                if u.starts_with("sandbox-resolver@") && !with_resolver {
                    continue;
                }
                args.push(format!("./{u}"));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = analyze(&args, &sys);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "verify failed:\n{err}");
            // Warnings (unknown keys, bad values) do not fail verify: none allowed.
            assert!(err.trim().is_empty(), "verify warned:\n{err}");
        }
    }

    /// "Overall exposure level for X: 1.3 OK" -> 1.3
    fn exposure(stdout: &str) -> Option<f64> {
        let line = stdout.lines().find(|l| l.contains("Overall exposure level"))?;
        let after = line.rsplit(':').next()?;
        after.split_whitespace().next()?.parse().ok()
    }

    #[test]
    fn exposure_is_parsed_from_the_summary_line() {
        assert_eq!(
            exposure("x\n→ Overall exposure level for a.service: 1.3 OK 🙂\n"),
            Some(1.3)
        );
        assert_eq!(exposure("nothing"), None);
    }

    #[test]
    fn agent_exposure_is_at_most_1_1() {
        for policy in ["strict", "default", "permissive"] {
            let d = tempfile::tempdir().expect("tempdir");
            render_into(d.path(), &["--policy", policy]);
            let sys = d.path().join("system");
            let out = analyze(
                &["security", "--offline=yes", "--man=no", "./openshell-sandbox.service"],
                &sys,
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let level = exposure(&text)
                .unwrap_or_else(|| panic!("no exposure line:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)));
            eprintln!("policy {policy}: agent unit exposure {level}");
            assert!(
                level <= 1.1,
                "policy {policy}: exposure {level} > 1.1 (the real OpenClaw runs under it):\n{text}"
            );
            // The sidecar is a proxy: it keeps the network, but the rest is locked.
            let out = analyze(
                &[
                    "security",
                    "--offline=yes",
                    "--man=no",
                    "./defenseclaw-gateway@sandbox.service",
                ],
                &sys,
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let level = exposure(&text).unwrap_or(10.0);
            eprintln!("policy {policy}: sidecar unit exposure {level}");
            assert!(level <= 2.5, "sidecar exposure {level}:\n{text}");
        }
    }

    #[test]
    fn no_systemd_writes_files_records_them_and_revert_removes_them() {
        let Applied {
            _dir,
            s,
            store,
            mut state,
            steps,
            first,
        } = applied(&["--policy", "strict"]);
        assert!(first[0].changes.iter().any(|c| c.contains("--no-systemd")), "{first:?}");
        let dir = s.root.path(UNIT_DIR);
        assert!(dir.join("openshell-sandbox.service").is_file());
        assert!(dir.join("defenseclaw-gateway@sandbox.service.d/sandbox.conf").is_file());
        assert!(
            !dir.join("multi-user.target.wants").exists(),
            "--no-systemd enables nothing"
        );
        let again = crate::engine::apply_all(&steps, &s, &store, &mut state, &mut |_| {}).expect("again");
        assert!(!again[0].changed(), "{again:?}");
        assert_eq!(saved_spec(&state).expect("record"), Some(s.clone()));
        // Another sandbox holds the templates too: they outlive this one.
        crate::host::with(&s.root, |h| {
            h.hold(Resource::UnitTemplates, "other", || Ok(Value::Null))
        })
        .expect("hold");
        let undo = Undo {
            root: s.root.clone(),
            name: s.name.clone(),
            purge: false,
        };
        let out = crate::engine::revert_all(&steps, &undo, &store, &mut state, &mut |_| {}).expect("revert");
        assert!(
            out[0]
                .changes
                .iter()
                .any(|c| c.contains("sandbox other still holds it")),
            "{out:?}"
        );
        assert!(dir.join("sandbox-net@.service").is_file());
        assert!(!dir.join("openshell-sandbox.service").exists());
        assert!(!dir.join("defenseclaw-gateway@sandbox.service.d").exists());
    }

    #[test]
    fn every_file_starts_with_the_mark_the_sweep_looks_for() {
        for f in render(&spec(&[]), &inputs()).expect("render") {
            assert!(
                f.body.starts_with(MARK),
                "{}: {}",
                f.rel,
                f.body.lines().next().unwrap_or("")
            );
        }
    }

    #[test]
    fn sweep_without_a_record_removes_what_carries_our_mark() {
        let Applied { _dir, s, .. } = applied(&[]);
        let dir = s.root.path(UNIT_DIR);
        // An operator's file of the same name without our mark stays.
        std::fs::write(dir.join("defenseclaw-sandbox.target"), "[Unit]\n").expect("w");
        let out = sweep_units(&s.root, "sandbox").expect("sweep");
        assert!(out.iter().any(|l| l.contains("lacks our header")), "{out:?}");
        assert!(dir.join("defenseclaw-sandbox.target").exists());
        for gone in [
            "openshell-sandbox.service",
            "sandbox-net@.service",
            "defenseclaw-gateway@.service",
            "defenseclaw-gateway@sandbox.service.d",
        ] {
            assert!(!dir.join(gone).exists(), "{gone} left: {out:?}");
        }
        std::fs::remove_file(dir.join("defenseclaw-sandbox.target")).expect("rm");
        assert!(sweep_units(&s.root, "sandbox").expect("again").is_empty());
    }

    #[test]
    fn a_unit_edited_since_setup_is_kept() {
        let Applied {
            _dir,
            s,
            store,
            mut state,
            steps,
            ..
        } = applied(&[]);
        let agent = s.root.path(UNIT_DIR).join("openshell-sandbox.service");
        std::fs::write(&agent, "# mine now\n").expect("edit");
        let undo = Undo {
            root: s.root.clone(),
            name: s.name.clone(),
            purge: false,
        };
        let out = crate::engine::revert_all(&steps, &undo, &store, &mut state, &mut |_| {}).expect("revert");
        assert!(
            out[0]
                .changes
                .iter()
                .any(|c| c.contains("kept") && c.contains("edited")),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&agent).expect("r"), "# mine now\n");
        assert!(!s.root.path(UNIT_DIR).join("sandbox-net@.service").exists());
    }
}
