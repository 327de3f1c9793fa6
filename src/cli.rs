//! The command line, as the operator sees it. Every flag is documented in
//! README.md ("Flags"); validation happens in `spec`, not here.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sandbox",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SANDBOX_COMMIT"), ")"),
    about = "Provision (and remove without a trace) a locked-down home for an AI agent runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the sandbox (or, with --disable, take it away again).
    Setup(SetupArgs),
    /// The change-control report of what `setup` with these flags would do (same as `setup --dry-run`).
    Plan(SetupArgs),
    /// Is the sandbox in place and healthy? Exit code 6 when anything is not.
    Status(StatusArgs),
    /// The audit log: every change applied or reverted, oldest first.
    Log(LogArgs),
    /// Check this host offline (kernel, nft, systemd, OpenClaw, DefenseClaw, state, audit log); one line per check with its fix.
    Doctor(DoctorArgs),
    /// CI jobs: run a command in an ephemeral sandbox of its own, or keep one for a runner's steps (README "CI jobs").
    Job(JobArgs),
    /// Print shell completions for SHELL to standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    Man,
    /// Egress policies: `policy suggest` writes one from what audit mode recorded.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a sandbox's DNS resolver (started by setup: its unit, or under --no-systemd a process setup records).
    #[command(hide = true)]
    Resolver(ResolverArgs),
    /// Take the sidecar's device out of OpenClaw's pairing store (started by setup --disable as the sandbox user).
    #[command(hide = true)]
    OpenclawUnpair(UnpairArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UnpairArgs {
    /// OpenClaw's state database.
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    /// The device id (hex SHA-256 of its public key).
    #[arg(long, value_name = "ID")]
    pub device: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print a policy file allowing exactly what the sandbox used since `setup --mode audit`: by name where a name was resolved, by address otherwise.
    Suggest(ResolverArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ResolverArgs {
    /// Which sandbox.
    #[arg(long, default_value = "sandbox", value_name = "NAME")]
    pub name: String,
    /// Take every file path (state included) under DIR instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Which sandbox.
    #[arg(long, default_value = "sandbox", value_name = "NAME")]
    pub name: String,
    /// Take every file path (state included) under DIR instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Do not ask systemd about the units.
    #[arg(long)]
    pub no_systemd: bool,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the result as node_exporter textfile metrics to PATH (atomically).
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Which sandbox's record to look for.
    #[arg(long, default_value = "sandbox", value_name = "NAME")]
    pub name: String,
    /// Take every file path (programs, state, audit log) under DIR instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Do not ask systemd (for a setup with --no-systemd).
    #[arg(long)]
    pub no_systemd: bool,
    /// The OpenClaw program setup's agent unit will start.
    #[arg(long, default_value = "/usr/local/bin/openclaw", value_name = "PATH")]
    pub agent_bin: PathBuf,
    /// The DefenseClaw gateway program setup's sidecar unit will start.
    #[arg(long, default_value = "/usr/local/bin/defenseclaw-gateway", value_name = "PATH")]
    pub sidecar_bin: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum JobCommand {
    /// Make a job sandbox, run CMD in it, destroy it; exits with CMD's status (README "Exit codes").
    Run(JobRunArgs),
    /// Make a job sandbox and print its name, for `job exec` and `job destroy`.
    Create(JobCreateArgs),
    /// Run CMD in an existing job sandbox; exits with CMD's status.
    Exec(JobExecArgs),
    /// Destroy a job sandbox (and every process of its uid); nothing to destroy is not an error.
    Destroy(JobNameArgs),
    /// List the job sandboxes.
    List(JobListArgs),
    /// Destroy the jobs past their TTL and those whose creator died.
    Gc(JobHostArgs),
}

/// Where jobs live.
#[derive(Debug, Clone, Args)]
pub struct JobHostArgs {
    /// Take every file path (state included) under DIR instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Run commands without systemd (fork and exec, in the job's namespaces); also: do not ask systemd about units.
    #[arg(long)]
    pub no_systemd: bool,
}

/// What a job's sandbox lets out.
#[derive(Debug, Clone, Args)]
pub struct JobSandboxArgs {
    /// Egress policy: a preset (default, strict, permissive) or a path to a policy file.
    #[arg(long, default_value = "permissive", value_name = "PRESET|FILE")]
    pub policy: String,
    /// Resolvers the job may use: comma-separated IPv4 addresses, or `host` for the host's upstream resolvers.
    #[arg(long, default_value = "8.8.8.8,1.1.1.1", value_name = "IP,IP|host")]
    pub dns: String,
    /// enforce: the policy only; audit: also web (TCP 80/443) to public addresses and any name, everything used recorded for `sandbox policy suggest --name JOB` (with `job create`; a `job run` sandbox is gone when it returns).
    #[arg(long, default_value = "enforce", value_name = "enforce|audit")]
    pub mode: String,
}

/// How one command runs in a job.
#[derive(Debug, Clone, Args)]
pub struct JobCmdArgs {
    /// Kill the command (every process of the job) after DUR (e.g. 90s, 10m, 2h); exit 124.
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// Memory limit (e.g. 512M, 2G): MemoryMax= with systemd, RLIMIT_AS per process without.
    #[arg(long, value_name = "SIZE")]
    pub memory_max: Option<String>,
    /// Limit on processes and threads: TasksMax= with systemd, RLIMIT_NPROC of the job's uid without.
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<u64>,
    /// Set K=V in the command's environment (repeatable); it starts with PATH, HOME, LANG and TERM only.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct JobRunArgs {
    #[command(flatten)]
    pub host: JobHostArgs,
    #[command(flatten)]
    pub sandbox: JobSandboxArgs,
    #[command(flatten)]
    pub cmd: JobCmdArgs,
}

#[derive(Debug, Clone, Args)]
pub struct JobCreateArgs {
    #[command(flatten)]
    pub host: JobHostArgs,
    #[command(flatten)]
    pub sandbox: JobSandboxArgs,
    /// The job's name (1-14 characters: a-z, 0-9, - and _); default: one made up.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// `job gc` destroys it once DUR (e.g. 3h) has passed.
    #[arg(long, default_value = "24h", value_name = "DUR")]
    pub ttl: String,
    /// The process whose death makes the job garbage for `job gc`: a pid, `parent` (whoever ran this command), or `none` (only the TTL counts).
    #[arg(long, default_value = "parent", value_name = "PID|parent|none")]
    pub creator: String,
}

#[derive(Debug, Clone, Args)]
pub struct JobExecArgs {
    #[command(flatten)]
    pub host: JobHostArgs,
    /// The job, as `job create` printed it.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub cmd: JobCmdArgs,
}

#[derive(Debug, Clone, Args)]
pub struct JobNameArgs {
    #[command(flatten)]
    pub host: JobHostArgs,
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct JobListArgs {
    #[command(flatten)]
    pub host: JobHostArgs,
    /// One JSON document (an array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Only this sandbox's entries (default: every sandbox's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Take every file path under DIR instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// One JSON object per line, as stored.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Egress policy: a preset (default, strict, permissive) or a path to a policy file.
    #[arg(long, default_value = "permissive", value_name = "PRESET|FILE")]
    pub policy: String,
    /// Address of the sandbox end of the veth pair (`auto`: the second address of a leased /30).
    #[arg(long, default_value = "auto", value_name = "IPV4|auto")]
    pub sandbox_ip: String,
    /// Address of the host end of the veth pair; the sidecar listens here (`auto`: the first address of a leased /30).
    #[arg(long, default_value = "auto", value_name = "IPV4|auto")]
    pub host_ip: String,
    /// The veth pair's subnet: `auto` leases a free /30 from --subnet-pool; a CIDR (/24 to /30) takes its first two addresses.
    #[arg(long, value_name = "CIDR|auto")]
    pub subnet: Option<String>,
    /// Where `--subnet auto` takes /30s from.
    #[arg(long, default_value = crate::host::DEFAULT_POOL, value_name = "CIDR")]
    pub subnet_pool: String,
    /// Home directory of the sandbox user [default: /home/<name>].
    #[arg(long, value_name = "DIR")]
    pub sandbox_home: Option<PathBuf>,
    /// Port of the OpenClaw gateway inside the sandbox; only the host IP may reach it.
    #[arg(long, default_value = "18789", value_name = "PORT")]
    pub openclaw_port: String,
    /// Resolvers the sandbox may use: comma-separated IPv4 addresses, or `host` for the host's upstream resolvers.
    #[arg(long, default_value = "8.8.8.8,1.1.1.1", value_name = "IP,IP|host")]
    pub dns: String,
    /// Do not create a device key for pre-pairing with the sidecar.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_name = "BOOL")]
    pub no_auto_pair: bool,
    /// Leave the host's firewall and sysctls alone (only the rules inside the sandbox are installed).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_name = "BOOL")]
    pub no_host_networking: bool,
    /// Close the guardrail proxy port and leave the guardrail section out of openclaw.json.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_name = "BOOL")]
    pub no_guardrail: bool,
    /// Do not ask for confirmation before changing the host.
    #[arg(long)]
    pub non_interactive: bool,
    /// Undo every step setup made, in reverse order, from the state record.
    #[arg(long)]
    pub disable: bool,
    /// With --disable: also remove the user, group and home, if setup created them.
    #[arg(long, requires = "disable")]
    pub purge: bool,
    /// Name of the sandbox; every object name (netns, veth, tables, state) derives from it.
    #[arg(long, default_value = "sandbox", value_name = "NAME")]
    pub name: String,
    /// Print every change that would be made, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run (or `plan`): the report as text, markdown (fit for a change ticket) or json.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<crate::report::Format>,
    /// Progress as one JSON event per line (a step, whether it changed anything), for configuration-management tools.
    #[arg(long)]
    pub json: bool,
    /// Take every file path (state included) under DIR instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Write unit files but do not talk to systemd.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", value_name = "BOOL")]
    pub no_systemd: bool,
    /// enforce: the policy only; audit: the policy plus web (TCP 80/443) to public addresses and any name, every name, address, protocol and port used recorded (see `sandbox policy suggest`).
    #[arg(long, default_value = "enforce", value_name = "enforce|audit")]
    pub mode: String,
    /// The OpenClaw program the agent unit starts (as `PATH gateway --port PORT`).
    #[arg(long, default_value = "/usr/local/bin/openclaw", value_name = "PATH")]
    pub agent_bin: PathBuf,
    /// The DefenseClaw gateway program the sidecar unit starts.
    #[arg(long, default_value = "/usr/local/bin/defenseclaw-gateway", value_name = "PATH")]
    pub sidecar_bin: PathBuf,
    /// The admin user the sidecar runs as (default: the user who ran sudo); without one, a dynamic user.
    #[arg(long, env = "SUDO_USER", value_name = "USER")]
    pub sidecar_user: Option<String>,
    /// Re-create the in-memory network (namespace, veth, rules) from the state record; run at boot by sandbox-net@NAME.service.
    #[arg(long, conflicts_with = "disable")]
    pub boot: bool,
    /// Read the settings from FILE (keys named as these flags, `_` for `-`); default: /etc/sandbox/NAME.toml under --root, when it exists. Flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With `plan` (or --dry-run): exit 0 when nothing would change, 2 when changes are pending, 1 on any error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// The flags given on the command line (ids), filled by [`parse_from`].
    #[arg(skip)]
    pub given: Vec<String>,
    /// The flags taken from the environment (`SUDO_USER`).
    #[arg(skip)]
    pub given_env: Vec<String>,
}

/// Parse the command line, remembering which flags were given on it (a
/// config file fills the others).
pub fn parse() -> Cli {
    parse_from(std::env::args_os())
}

pub fn parse_from<I, T>(argv: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().get_matches_from(argv);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Some((_, sub)), Command::Setup(a) | Command::Plan(a)) = (matches.subcommand(), &mut cli.command) {
        let from = |want: ValueSource| -> Vec<String> {
            sub.ids()
                .filter(|id| sub.value_source(id.as_str()) == Some(want))
                .map(|id| id.to_string())
                .collect()
        };
        a.given = from(ValueSource::CommandLine);
        a.given_env = from(ValueSource::EnvVariable);
    }
    cli
}

impl Cli {
    /// Whether this command was asked for JSON (`--json`, or `--format
    /// json`): its errors are then JSON too.
    pub fn wants_json(&self) -> bool {
        match &self.command {
            Command::Setup(a) | Command::Plan(a) => a.json || a.format == Some(crate::report::Format::Json),
            Command::Status(a) => a.json,
            Command::Log(a) => a.json,
            Command::Job(JobArgs {
                command: JobCommand::List(a),
            }) => a.json,
            _ => false,
        }
    }
}
