//! `sandbox setup` and `sandbox setup --disable`, start to end: validate,
//! preflight, confirm, lock, run the steps, report.

use std::io::{BufRead, IsTerminal, Write};

use crate::audit::{self, AuditLog, RunRecord};
use crate::cli::{Cli, Command, LogArgs, SetupArgs, StatusArgs};
use crate::config_file::Settings;
use crate::engine::{self, Outcome};
use crate::error::{Error, Result};
use crate::preflight;
use crate::report::{self, Format, Report};
use crate::spec::{self, Spec};
use crate::state::{StepRecord, Store};
use crate::status;
use crate::steps;

/// Exit code: nothing to do (or done).
pub const EXIT_OK: i32 = 0;
/// `--detailed-exitcode`: changes are pending.
pub const EXIT_PENDING: i32 = 2;

/// The whole command: run it, record the outcome of a run that reaches
/// the host (audit log, journal), say an error (as JSON on standard
/// output too, for `--json` and `--format json`), and return the exit code.
pub fn main(cli: &Cli) -> i32 {
    let record = match &cli.command {
        Command::Setup(a) if !a.dry_run => start_record(a),
        _ => None,
    };
    let result = dispatch(cli);
    // A write to standard output that failed (not a closed pipe) fails a
    // command that otherwise succeeded: its output is incomplete.
    let result = result.and_then(|code| match crate::out::take_error() {
        Some(e) => Err(Error::io("write", "standard output", e)),
        None => Ok(code),
    });
    let detailed = matches!(&cli.command, Command::Setup(a) | Command::Plan(a) if a.detailed_exitcode);
    let code = match &result {
        Ok(code) => *code,
        // As terraform's: 2 means "changes pending", so every error is 1.
        Err(_) if detailed => 1,
        // A runner tells a build failure from a system failure by it.
        Err(_) if crate::job::passes_status(&cli.command) => crate::job::EXIT_SANDBOX_FAILED,
        Err(e) => e.exit_code(),
    };
    if let Some(r) = record {
        if let Err(e) = r.finish(code, result.as_ref().err()) {
            crate::errln!("sandbox: warning: the outcome of this run is not in the audit log: {e}");
        }
    }
    if let Err(e) = &result {
        // `status --json` has said "unhealthy" in its own document.
        if cli.wants_json() && !matches!(e, Error::Unhealthy { .. }) {
            crate::outln!("{}", error_event(e, code));
        }
        crate::errln!("sandbox: {e}");
    }
    code
}

/// `{"event":"error","exit_code":…,"cause":…,"fix":…}`: the error's
/// text without its `fix:` lines, and those lines joined.
pub fn error_event(e: &Error, exit_code: i32) -> serde_json::Value {
    let text = e.to_string();
    let mut cause = Vec::new();
    let mut fixes = Vec::new();
    for line in text.lines() {
        match line.trim_start().strip_prefix("fix: ") {
            Some(fix) => fixes.push(fix.trim().to_string()),
            None => cause.push(line),
        }
    }
    serde_json::json!({
        "event": "error",
        "exit_code": exit_code,
        "cause": cause.join("\n"),
        "fix": fixes.join("; "),
    })
}

fn dispatch(cli: &Cli) -> Result<i32> {
    use clap::CommandFactory;
    let ok = |r: Result<()>| r.map(|()| EXIT_OK);
    match &cli.command {
        Command::Setup(args) if args.boot => ok(crate::boot::run(args)),
        Command::Setup(args) => setup(args),
        Command::Plan(args) => plan(args),
        Command::Status(args) => ok(status(args)),
        Command::Log(args) => ok(log(args)),
        Command::Doctor(args) => ok(crate::doctor::run(args)),
        Command::Resolver(a) => ok(crate::resolver::run(&a.name, &a.root)),
        Command::OpenclawUnpair(a) => {
            let found = crate::steps::openclaw_store::unpair(&a.db, &a.device)?;
            let said = match found {
                crate::steps::openclaw_store::Unpaired::Removed => "removed\n",
                crate::steps::openclaw_store::Unpaired::Absent => "absent\n",
            };
            crate::out::stdout_bytes(said.as_bytes());
            Ok(EXIT_OK)
        }
        Command::Policy(crate::cli::PolicyCommand::Suggest(a)) => {
            let text = crate::resolver::suggest::suggest_file(&crate::spec::Root(a.root.clone()), &a.name)?;
            crate::out::stdout_bytes(text.as_bytes());
            Ok(EXIT_OK)
        }
        Command::Job(args) => crate::job::dispatch(&args.command),
        Command::Completions { shell } => {
            // Rendered in memory: the generator panics on a write error
            // (a reader that went away).
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "sandbox", &mut text);
            crate::out::stdout_bytes(&text);
            Ok(EXIT_OK)
        }
        Command::Man => {
            let mut text = Vec::new();
            // Section 8: the program lives in /usr/sbin.
            clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut text)
                .map_err(|e| Error::io("render man page", "stdout", e))
                .map(|()| crate::out::stdout_bytes(&text))
                .map(|()| EXIT_OK)
        }
    }
}

/// The sidecar user recorded at the first setup stays, unless this run
/// names one (`--sidecar-user`, `SUDO_USER`, the config file): a re-run
/// from a root shell (no `SUDO_USER`) must not move the sidecar to a
/// dynamic user and its data with it.
fn keep_recorded_sidecar_user(mut spec: Spec, settings: &Settings, previous: Option<&crate::state::State>) -> Spec {
    use crate::config_file::Source;
    let named = match settings.sources.get("sidecar_user") {
        Some(Source::Default) | None => false,
        // An empty SUDO_USER, or root's, names nobody.
        Some(Source::Env { .. }) => {
            std::env::var("SUDO_USER").is_ok_and(|u| !u.trim().is_empty() && u.trim() != "root")
        }
        Some(_) => true,
    };
    if spec.sidecar_user.is_some() || named {
        return spec;
    }
    let recorded = previous
        .and_then(|s| s.spec.as_ref())
        .and_then(|v| v.get("sidecar_user"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    if recorded.is_some() {
        spec.sidecar_user = recorded;
    }
    spec
}

/// The start record of a `setup` that may change the host; its outcome
/// follows in [`main`]. Only as root (the log is root's), and only once
/// the name and root are valid.
fn start_record(args: &SetupArgs) -> Option<RunRecord> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let (name, root) = spec::disable_target(args)
        .or_else(|_| spec::target(&args.name, &args.root))
        .ok()?;
    let action = if args.boot {
        "boot"
    } else if args.disable {
        "revert"
    } else {
        "apply"
    };
    let command = std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{a:?}")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    RunRecord::start(&root, &name, action, command)
}

pub fn setup(args: &SetupArgs) -> Result<i32> {
    if args.format.is_some() && !args.dry_run {
        return Err(Error::input(
            "--format",
            "only shapes the plan of --dry-run",
            "add --dry-run (or use `sandbox plan`); for progress as JSON use --json",
        ));
    }
    if args.detailed_exitcode && !args.dry_run {
        return Err(Error::input(
            "--detailed-exitcode",
            "only shapes the exit code of a plan",
            "use `sandbox plan --detailed-exitcode` (or add --dry-run)",
        ));
    }
    if args.json && !args.non_interactive && !args.dry_run {
        return Err(Error::input(
            "--json",
            "is for tools, and a tool cannot answer the confirmation",
            "add --non-interactive",
        ));
    }
    if args.disable {
        return disable(args);
    }
    let settings = Settings::resolve(args)?;
    let spec = Spec::from_settings(&settings, &args.root)?;
    let steps = steps::all();
    // Before reading the record: it is root's, and "permission denied" on
    // it would hide the real problem. A plan too: without root it can read
    // neither the record nor the tables, and would plan wrongly.
    refuse_unprivileged(if args.dry_run { "plan" } else { "setup" })?;
    let previous = Store::peek(&spec.root, &spec.name)?;
    let mut spec = keep_recorded_sidecar_user(spec, &settings, previous.as_ref());
    // The addresses it holds, or would be handed (only looked up here).
    crate::host::lease_for(&mut spec, previous.as_ref(), false)?;
    if args.dry_run {
        let pending = dry_run(
            &spec,
            &settings,
            &steps,
            previous.as_ref(),
            args.format.unwrap_or(Format::Text),
        )?;
        return Ok(if pending && args.detailed_exitcode {
            EXIT_PENDING
        } else {
            EXIT_OK
        });
    }
    let problems = preflight::for_setup(&spec, previous.as_ref());
    if !problems.is_empty() {
        return Err(Error::Preflight { problems });
    }
    warn(&spec);
    if !args.non_interactive {
        let plan = engine::plan_all(&steps, &spec, previous.as_ref());
        print_plan(&spec, &plan);
        if plan.iter().all(|o| !o.changed()) {
            crate::outln!("nothing to change: sandbox {} is in place", spec.name);
            return Ok(EXIT_OK);
        }
        confirm("Apply these changes?")?;
    }
    // One durable intent, barriers where a change must follow an earlier
    // one to disk, one commit at the end (sys::files, "group commit").
    // Turned on before the lease, so the host record's save joins the
    // intent's sync, which comes before any change that outlives a power
    // cut.
    crate::sys::files::group_commit(true);
    let (store, mut state) = Store::open(&spec.root, &spec.name)?;
    // After the lock: a run refused for it must leave no trace.
    let mut report = Reporter::new(AuditLog::open(&spec.root, &spec.name)?, "apply", args.json);
    // Under the host lock: two sandboxes made at once get different subnets.
    crate::host::lease_for(&mut spec, previous.as_ref(), true)?;
    state.spec = serde_json::to_value(&spec).ok();
    report.say(&format!(
        "sandbox {}: setup (policy {}, root {})",
        spec.name,
        spec.policy_name,
        spec.root.0.display()
    ));
    let before = state.steps.clone();
    let mut said = Vec::new();
    let done = engine::apply_all(&steps, &spec, &store, &mut state, &mut |o| {
        if o.changed() {
            said.push(o.step.to_string());
        }
        report.step(o)
    });
    let done = done.map_err(|e| e.after_changes(&touched(&said, &before, &state.steps)));
    let finished = report.finish(done.as_ref().err());
    crate::sys::files::commit()?;
    finished?;
    let done = done?;
    let changed = done.iter().filter(|o| o.changed()).count();
    if changed == 0 {
        report.say(&format!(
            "nothing changed: all {} steps were already in place",
            done.len()
        ));
    } else {
        report.say(&format!("done: {changed} of {} steps changed", done.len()));
    }
    report.done(changed);
    Ok(EXIT_OK)
}

fn disable(args: &SetupArgs) -> Result<i32> {
    let (name, root) = spec::disable_target(args)?;
    let steps = steps::all();
    refuse_unprivileged("setup --disable")?;
    // No record, or one from a run that never reached its first step:
    // sweep what is named after this sandbox and carries our mark.
    let Some(previous) = Store::peek(&root, &name)?.filter(|p| !p.steps.is_empty()) else {
        return sweep(args, &name, &root, &steps);
    };
    if args.dry_run {
        let ids: Vec<&str> = steps
            .iter()
            .rev()
            .map(|s| s.id())
            .filter(|id| previous.get(id).is_some())
            .collect();
        if args.format == Some(Format::Json) {
            let changes: Vec<_> = ids
                .iter()
                .map(|id| serde_json::json!({"step": id, "changes": ["revert"]}))
                .collect();
            crate::outln!(
                "{}",
                serde_json::json!({"sandbox": name, "action": "revert", "changes": changes})
            );
        } else {
            crate::outln!("sandbox {name}: --disable would revert, in this order:");
            for id in &ids {
                crate::outln!("  {id:<14} revert");
            }
        }
        return Ok(if args.detailed_exitcode && !ids.is_empty() {
            EXIT_PENDING
        } else {
            EXIT_OK
        });
    }
    if !args.non_interactive {
        let ids: Vec<&str> = steps
            .iter()
            .rev()
            .map(|s| s.id())
            .filter(|id| previous.get(id).is_some())
            .collect();
        crate::outln!("sandbox {name}: --disable reverts {}", ids.join(", "));
        confirm("Take the sandbox away?")?;
    }
    let (store, mut state) = Store::open(&root, &name)?;
    let mut report = Reporter::new(AuditLog::open(&root, &name)?, "revert", args.json);
    report.say(&format!("sandbox {name}: disable (root {})", root.0.display()));
    let undo = engine::Undo {
        root: root.clone(),
        name: name.clone(),
        purge: args.purge,
    };
    let mut said = Vec::new();
    crate::sys::files::group_commit(true);
    let done = engine::revert_all(&steps, &undo, &store, &mut state, &mut |o| {
        if o.changed() {
            said.push(o.step.to_string());
        }
        report.step(o)
    });
    let done = done.map_err(|e| e.after_changes(&said));
    let finished = report.finish(done.as_ref().err());
    crate::sys::files::commit()?;
    finished?;
    // Steps that failed to revert stay in the saved record (every other
    // step was reverted): keep it, so a re-run reverts only them.
    let done = done?;
    store.remove(&state)?;
    crate::host::with(&root, |h| h.release_lease(&name))?;
    crate::sys::files::commit()?;
    report.say(&format!(
        "done: {} steps reverted; nothing of sandbox {name} is left",
        done.len()
    ));
    report.done(done.iter().filter(|o| o.changed()).count());
    Ok(EXIT_OK)
}

/// `--disable` without a record (removed or lost behind our back): each
/// step removes what carries our mark and a name derived from `name`
/// (namespace, veth with our alias, our nft table, DNS files with our
/// header), under the lock. What only the record could undo is said.
fn sweep(args: &SetupArgs, name: &str, root: &spec::Root, steps: &[Box<dyn engine::Step>]) -> Result<i32> {
    let dir = root.state_dir(name);
    let json = args.json || args.format == Some(Format::Json);
    if args.dry_run {
        if json {
            // Nothing recorded to revert; what carries our mark is found
            // only by looking, which a dry run does not do.
            crate::outln!(
                "{}",
                serde_json::json!({"sandbox": name, "action": "sweep", "changes": [], "recorded": false})
            );
        } else {
            crate::outln!(
                "sandbox {name}: no state record under {}: --disable would remove what is named after it \
                 and carries our mark (namespace, veth, nft table, DNS files)",
                dir.display()
            );
        }
        return Ok(EXIT_OK);
    }
    if !args.non_interactive {
        crate::outln!("sandbox {name}: no state record; --disable removes what is named after it and carries our mark");
        confirm("Sweep?")?;
    }
    let (store, _state) = Store::open(root, name)?;
    let undo = engine::Undo {
        root: root.clone(),
        name: name.to_string(),
        purge: false,
    };
    let mut found = Vec::new();
    let done = engine::sweep_all(steps, &undo, name, &mut |o| {
        if json {
            let event = serde_json::json!({
                "event": "step",
                "action": "sweep",
                "step": o.step,
                "changed": o.changed(),
                "changes": o.changes,
            });
            crate::outln!("{event}");
        } else {
            progress(o);
        }
        found.push(o.clone());
    });
    if !found.is_empty() {
        let mut audit = AuditLog::open(root, name)?;
        for o in &found {
            audit.record("sweep", o)?;
        }
    }
    let said: Vec<String> = found
        .iter()
        .filter(|o| o.changed())
        .map(|o| o.step.to_string())
        .collect();
    done.map_err(|e| e.after_changes(&said))?;
    store.remove_all()?;
    crate::host::with(root, |h| h.release_lease(name))?;
    if json {
        let event = serde_json::json!({
            "event": "done",
            "action": "revert",
            "changed": !said.is_empty(),
            "changed_steps": said.len(),
        });
        crate::outln!("{event}");
    } else if found.is_empty() {
        crate::outln!(
            "sandbox {name}: no state record under {}: nothing to disable",
            dir.display()
        );
    } else {
        crate::outln!(
            "done: no state record, so what carries our mark was swept; kept: the user and the files \
             in its home (their hashes were in the record, so they cannot be told from your edits)"
        );
    }
    Ok(EXIT_OK)
}

/// The steps that changed the host in a run: those that said so, and any
/// whose record the run wrote or rewrote. Records are written ahead of a
/// change, so a step that failed halfway is among them. A failure after
/// any of these exits 1, never 2 or 3 ("nothing was changed").
pub(crate) fn touched(said: &[String], before: &[StepRecord], after: &[StepRecord]) -> Vec<String> {
    let mut out = said.to_vec();
    for r in after {
        let kept = before.iter().any(|b| b.id == r.id && b.data == r.data);
        if !kept && !out.contains(&r.id) {
            out.push(r.id.clone());
        }
    }
    out
}

/// Not root (or capabilities missing): exit 3, saying to run `command`
/// with sudo. One problem is said as it is, not as a preflight list.
pub(crate) fn refuse_unprivileged(command: &str) -> Result<()> {
    let mut problems = preflight::privileges(command);
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(Error::Preflight { problems }),
    }
}

/// What will keep the units from running (a missing program, say),
/// once per run, on standard error.
fn warn(spec: &Spec) {
    for w in crate::steps::units::warnings(spec) {
        crate::errln!("warning: {w}");
    }
}

/// The plan; true when changes are pending.
fn dry_run(
    spec: &Spec,
    settings: &Settings,
    steps: &[Box<dyn engine::Step>],
    previous: Option<&crate::state::State>,
    format: Format,
) -> Result<bool> {
    warn(spec);
    let changes = engine::plan_all(steps, spec, previous);
    let unchanged = changes.iter().all(|o| !o.changed());
    let (names, dns_denials) = report::names(spec);
    let r = Report {
        sandbox: spec.name.clone(),
        policy: spec.policy_name.clone(),
        policy_description: spec.policy.description.clone(),
        root: spec.root.0.display().to_string(),
        config_file: settings.file.as_ref().map(|p| p.display().to_string()),
        settings: settings.rows(),
        changes,
        flows: report::flows(spec),
        inventory: engine::inventory_all(steps, spec),
        // Say now what would stop the real run, without failing the plan.
        preflight: preflight::for_setup(spec, previous)
            .iter()
            .map(|p| p.to_string())
            .collect(),
        names,
        dns_denials,
    };
    crate::out!("{}", report::render(&r, format));
    if format == Format::Text {
        if unchanged {
            crate::outln!("\nnothing to change");
        }
        crate::outln!("(dry run: nothing was changed)");
    }
    Ok(!unchanged)
}

fn print_plan(spec: &Spec, plan: &[Outcome]) {
    crate::outln!(
        "sandbox {}: plan (policy {}: {}; root {})",
        spec.name,
        spec.policy_name,
        spec.policy.description,
        spec.root.0.display()
    );
    for o in plan {
        if o.changes.is_empty() {
            crate::outln!("  {:<14} in place", o.step);
        }
        for c in &o.changes {
            crate::outln!("  {:<14} {c}", o.step);
        }
    }
}

/// Progress for the operator (lines, or JSON events with `--json`) and
/// the audit log, one step at a time.
struct Reporter {
    audit: AuditLog,
    action: &'static str,
    json: bool,
    /// The first audit write that failed; reported after the run, since a
    /// step that changed the host must still finish its record.
    audit_failed: Option<Error>,
}

impl Reporter {
    fn new(audit: AuditLog, action: &'static str, json: bool) -> Reporter {
        Reporter {
            audit,
            action,
            json,
            audit_failed: None,
        }
    }

    /// A line for people; JSON mode keeps standard output to events.
    fn say(&self, line: &str) {
        if !self.json {
            crate::outln!("{line}");
        }
    }

    fn step(&mut self, o: &Outcome) {
        if self.json {
            let event = serde_json::json!({
                "event": "step",
                "action": self.action,
                "step": o.step,
                "changed": o.changed(),
                "changes": o.changes,
            });
            crate::outln!("{event}");
        } else {
            progress(o);
        }
        if let Err(e) = self.audit.record(self.action, o) {
            self.audit_failed.get_or_insert(e);
        }
    }

    fn done(&self, changed_steps: usize) {
        if self.json {
            let event = serde_json::json!({
                "event": "done",
                "action": self.action,
                "changed": changed_steps > 0,
                "changed_steps": changed_steps,
            });
            crate::outln!("{event}");
        }
    }

    /// A step's own failure outranks a failed audit write.
    fn finish(&mut self, run_failed: Option<&Error>) -> Result<()> {
        match (run_failed, self.audit_failed.take()) {
            (None, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

fn progress(o: &Outcome) {
    if o.changes.is_empty() {
        crate::outln!("  {:<14} unchanged", o.step);
    }
    for c in &o.changes {
        crate::outln!("  {:<14} {c}", o.step);
    }
}

/// `sandbox plan`: `setup --dry-run` under its own name.
pub fn plan(args: &SetupArgs) -> Result<i32> {
    if args.boot || args.disable {
        return Err(Error::input(
            "sandbox plan",
            "plans a setup; --boot and --disable are not plans",
            "use `sandbox setup --disable --dry-run` to see what --disable would revert",
        ));
    }
    let mut a = args.clone();
    a.dry_run = true;
    setup(&a)
}

/// `sandbox status`: a table (or JSON); unhealthy is exit code 6.
pub fn status(args: &StatusArgs) -> Result<()> {
    let (name, root) = spec::target(&args.name, &args.root)?;
    refuse_unprivileged("status")?;
    let s = status::collect(&root, &name, !args.no_systemd)?;
    if let Some(path) = &args.textfile {
        write_textfile(path, &metrics(&s))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&s).map_err(|e| Error::io("encode status", "stdout", e.into()))?;
        crate::outln!("{text}");
    } else {
        status::print_table(&s);
    }
    if s.healthy {
        Ok(())
    } else {
        Err(Error::Unhealthy { name })
    }
}

/// `status` in node_exporter's textfile format: health per check, the
/// steps that drifted, and refusals per destination (a counter).
pub fn metrics(s: &status::Status) -> String {
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let name = esc(&s.name);
    let ids: Vec<&str> = steps::all().iter().map(|st| st.id()).collect();
    let drifted = s
        .checks
        .iter()
        .filter(|c| !c.ok && ids.contains(&c.check.as_str()))
        .count();
    let mut out = String::new();
    out += "# HELP sandbox_healthy Whether every check of `sandbox status` passed (1) or not (0).\n";
    out += "# TYPE sandbox_healthy gauge\n";
    out += &format!("sandbox_healthy{{sandbox=\"{name}\"}} {}\n", u8::from(s.healthy));
    out += "# HELP sandbox_check_ok Each check of `sandbox status`: passed (1) or failed (0).\n";
    out += "# TYPE sandbox_check_ok gauge\n";
    for c in &s.checks {
        out += &format!(
            "sandbox_check_ok{{sandbox=\"{name}\",check=\"{}\"}} {}\n",
            esc(&c.check),
            u8::from(c.ok)
        );
    }
    out += "# HELP sandbox_drifted_steps Steps whose objects differ from what setup made.\n";
    out += "# TYPE sandbox_drifted_steps gauge\n";
    out += &format!("sandbox_drifted_steps{{sandbox=\"{name}\"}} {drifted}\n");
    out += "# HELP sandbox_refused_packets_total Packets refused per destination (netns: last 24 h of attempts; host: since the last setup).\n";
    out += "# TYPE sandbox_refused_packets_total counter\n";
    for d in &s.denials {
        let layer = if d.layer == crate::firewall::denials::Where::Host {
            "host"
        } else {
            "netns"
        };
        out += &format!(
            "sandbox_refused_packets_total{{sandbox=\"{name}\",layer=\"{layer}\",destination=\"{}\",protocol=\"{}\",port=\"{}\"}} {}\n",
            d.dst,
            esc(&d.proto),
            d.port,
            d.count
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out += "# HELP sandbox_status_timestamp_seconds When this file was written.\n";
    out += "# TYPE sandbox_status_timestamp_seconds gauge\n";
    out += &format!("sandbox_status_timestamp_seconds{{sandbox=\"{name}\"}} {now}\n");
    out
}

/// Written beside PATH, synced, then renamed over it: node_exporter never
/// reads half a file.
fn write_textfile(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file_name.is_empty() {
        return Err(Error::input(
            format!("--textfile {}", path.display()),
            "names no file",
            "e.g. --textfile /var/lib/node_exporter/textfile_collector/sandbox.prom",
        ));
    }
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write metrics", path, e)
    })
}

/// `sandbox log`: the audit trail, oldest first.
pub fn log(args: &LogArgs) -> Result<()> {
    let root = spec::target("sandbox", &args.root)?.1;
    // The audit log is root's alone (0600).
    refuse_unprivileged("log")?;
    let entries = audit::read(&root, args.name.as_deref())?;
    for e in &entries {
        if args.json {
            let line = serde_json::to_string(e).map_err(|err| Error::io("encode entry", "stdout", err.into()))?;
            crate::outln!("{line}");
        } else {
            // A run's start and outcome, or one change.
            let (what, detail) = match (e.record.as_deref(), e.outcome.as_deref()) {
                (Some("start"), _) => ("start".to_string(), e.command.clone().unwrap_or_default()),
                (Some("outcome"), Some(o)) => {
                    let code = e.exit_code.unwrap_or_default();
                    let why = e.error.as_deref().and_then(|t| t.lines().next()).unwrap_or("");
                    let detail = if why.is_empty() {
                        format!("(exit {code})")
                    } else {
                        format!("(exit {code}) {why}")
                    };
                    (o.to_uppercase(), detail)
                }
                _ => (e.step.clone(), e.change.clone()),
            };
            crate::outln!(
                "{}  {:<12} {:<10} {:<7} {:<14} {}",
                e.time,
                e.sandbox,
                e.by,
                e.action,
                what,
                detail
            );
        }
    }
    if entries.is_empty() && !args.json {
        crate::outln!("no entries in {}", audit::path(&root).display());
    }
    Ok(())
}

fn confirm(question: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::input(
            "confirmation",
            "standard input is not a terminal, so nobody can answer",
            "pass --non-interactive to run without asking",
        ));
    }
    crate::out!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("read answer", "stdin", e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::input(
            "confirmation",
            "not confirmed",
            "answer y to proceed, or pass --non-interactive",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_node_exporter_text_and_written_atomically() {
        let s = status::Status {
            name: "a".into(),
            healthy: false,
            policy: "strict".into(),
            checks: vec![
                status::Check {
                    check: "veth".into(),
                    ok: false,
                    detail: "drift: x".into(),
                    fix: None,
                },
                status::Check {
                    check: "agent \"unit\"".into(),
                    ok: true,
                    detail: String::new(),
                    fix: None,
                },
            ],
            denials: vec![crate::firewall::denials::Denial {
                dst: "203.0.113.80".parse().expect("ip"),
                proto: "tcp".into(),
                port: 443,
                count: 3,
                bytes: 180,
                expires_s: None,
                layer: crate::firewall::denials::Where::Netns,
                last: None,
            }],
            names: vec![],
            dns_denials: Default::default(),
            dns_rebinding: Default::default(),
        };
        let text = metrics(&s);
        assert!(text.contains("sandbox_healthy{sandbox=\"a\"} 0\n"), "{text}");
        assert!(
            text.contains("sandbox_check_ok{sandbox=\"a\",check=\"veth\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("check=\"agent \\\"unit\\\"\"} 1\n"), "{text}");
        assert!(text.contains("sandbox_drifted_steps{sandbox=\"a\"} 1\n"), "{text}");
        assert!(
            text.contains("# TYPE sandbox_refused_packets_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "sandbox_refused_packets_total{sandbox=\"a\",layer=\"netns\",destination=\"203.0.113.80\",protocol=\"tcp\",port=\"443\"} 3\n"
        ));
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("sandbox.prom");
        std::fs::write(&path, "old").expect("seed");
        write_textfile(&path, &text).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
        let left: Vec<_> = std::fs::read_dir(d.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }

    fn rec(id: &str, data: serde_json::Value) -> StepRecord {
        StepRecord {
            id: id.into(),
            done: true,
            data,
        }
    }

    #[test]
    fn a_step_is_touched_when_it_said_so_or_its_record_was_written() {
        let before = vec![rec("user", serde_json::json!({"created": true}))];
        // A re-run that rewrote nothing and said nothing touched nothing.
        assert!(touched(&[], &before, &before.clone()).is_empty());
        // A step under way wrote its record ahead of a change, then failed.
        let after = vec![
            before[0].clone(),
            rec("netns", serde_json::json!({"made": "/run/netns"})),
        ];
        assert_eq!(touched(&[], &before, &after), ["netns"]);
        let rewritten = vec![rec("user", serde_json::json!({"created": false}))];
        assert_eq!(touched(&["dns".into()], &before, &rewritten), ["dns", "user"]);
    }
}
