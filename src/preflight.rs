//! Checks made before anything changes. Every problem is reported at once,
//! each with its fix, so an operator fixes the host in one go.

use caps::{CapSet, Capability};
use ipnet::Ipv4Net;

use crate::error::Error;
use crate::spec::Spec;
use crate::state::State;
use crate::steps::veth_alias;
use crate::sys::{netlink::Netlink, nft, users};

/// Capabilities every run needs: netlink and nft changes, and mounting and
/// entering the namespace.
const NEEDED: &[(Capability, &str)] = &[
    (
        Capability::CAP_NET_ADMIN,
        "configure links, addresses, routes and nftables",
    ),
    (Capability::CAP_SYS_ADMIN, "mount and enter the network namespace"),
];

/// Linux, root and the capabilities; `command` (`setup`, `status`, ...)
/// goes into the fix, so it says exactly what to run.
pub fn privileges(command: &str) -> Vec<Error> {
    let mut problems = Vec::new();
    if std::env::consts::OS != "linux" {
        problems.push(Error::host(
            "this host",
            "sandbox mode requires Linux",
            "run it on a Linux host",
        ));
        return problems;
    }
    if !nix::unistd::geteuid().is_root() {
        problems.push(Error::host(
            "user",
            format!("running as uid {}, not root", nix::unistd::geteuid()),
            format!("run it with sudo: sudo sandbox {command} ..."),
        ));
        return problems;
    }
    for (cap, why) in NEEDED {
        match caps::has_cap(None, CapSet::Effective, *cap) {
            Ok(true) => {}
            Ok(false) => problems.push(Error::host(
                format!("capability {cap}"),
                format!("missing from the effective set; needed to {why}"),
                format!("run as full root, or grant {cap} (e.g. in the container or unit that runs sandbox)"),
            )),
            Err(e) => problems.push(Error::host(
                format!("capability {cap}"),
                format!("cannot read: {e}"),
                "run as root",
            )),
        }
    }
    problems
}

pub fn for_setup(spec: &Spec, state: Option<&State>) -> Vec<Error> {
    let mut problems = privileges("setup");
    if !problems.is_empty() {
        return problems;
    }
    // Our tables are there already: the kernel has nf_tables.
    let installed = state.is_some_and(|s| s.get("firewall").is_some_and(|r| r.done));
    problems.extend(nf_tables(!installed));
    // The record as it is now, not as it was read before preflight began:
    // a run racing us on this name writes its record ahead of making its
    // objects, so they are not taken for someone else's.
    let fresh = crate::state::Store::peek(&spec.root, &spec.name).ok().flatten();
    let state = fresh.as_ref().or(state);
    match address_clashes(spec, state) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(e),
    }
    match foreign_objects(spec, state) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(e),
    }
    problems.extend(identity(spec));
    problems.extend(crate::engine::preflight_all(&crate::steps::all(), spec));
    problems
}

/// `nft` on PATH and, with `probe_kernel`, nf_tables in the kernel.
fn nf_tables(probe_kernel: bool) -> Option<Error> {
    if let Err(why) = nft::available() {
        return Some(Error::host(
            "nft",
            why,
            "install nftables: apt-get install nftables (or dnf install nftables); the kernel needs nf_tables",
        ));
    }
    let why = probe_kernel.then(nft::kernel_support)?.err()?;
    Some(Error::host(
        "kernel nf_tables",
        why,
        "load it (modprobe nf_tables) or boot a kernel built with CONFIG_NF_TABLES",
    ))
}

/// What would stop a job's sandbox (`sandbox job`): nft, an
/// address clash, objects of that name that are not ours, and the job
/// steps' own checks. (Root was checked by the caller; a job has no
/// account, so the accounts database is not read.)
pub fn for_job(spec: &Spec) -> Vec<Error> {
    let mut problems = Vec::new();
    // The kernel probe is one nfnetlink request (no `nft` run), cheap
    // enough for every job's start.
    problems.extend(nf_tables(true));
    match address_clashes(spec, None) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(e),
    }
    match foreign_objects(spec, None) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(e),
    }
    problems.extend(crate::engine::preflight_all(&crate::steps::all(), spec));
    problems
}

/// Login shells that let nobody in.
const NO_LOGIN: &[&str] = &["", "/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"];

/// The accounts database (under `--root`) against the sandbox user and its
/// home: the user must be a system account that setup made or that
/// cannot log in (never root, never a person's), and the home no other
/// account's home, nor a directory holding one.
pub fn identity(spec: &Spec) -> Vec<Error> {
    let read = |file: &str| {
        crate::sys::bounded::read_regular(&spec.root.path(file), 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let passwd = match read("/etc/passwd") {
        Ok(t) => users::parse_passwd(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return vec![Error::io("read", spec.root.path("/etc/passwd"), e)],
    };
    // Shadow and login.defs may be absent (a bare --root tree): no
    // password, the default UID_MIN.
    let shadow = read("/etc/shadow").unwrap_or_default();
    let uid_min = read("/etc/login.defs").map(|t| uid_min(&t)).unwrap_or(DEFAULT_UID_MIN);
    let mut problems = Vec::new();
    let name = &spec.name;
    let sandbox = match users::user(&spec.root, name) {
        Ok(a) => a.or_else(|| passwd.iter().find(|a| &a.name == name).cloned()),
        Err(e) => return vec![e],
    };
    let fix_user =
        "pick a --name that is not an existing person's or root's account (setup then creates the system user)";
    if let Some(a) = &sandbox {
        let password = has_password(&shadow, name);
        let login = !NO_LOGIN.contains(&a.shell.as_str());
        let why = if a.uid == 0 {
            Some("has uid 0: the agent would run as root".to_string())
        } else if a.uid >= uid_min {
            Some(format!(
                "has uid {} (UID_MIN {uid_min} and above are people's accounts): the agent would own that person's files",
                a.uid
            ))
        } else if a.gecos != users::COMMENT && login && password {
            Some(format!(
                "can log in (shell {}, a password set): it is someone's account, not one for the agent",
                a.shell
            ))
        } else {
            None
        };
        if let Some(why) = why {
            problems.push(Error::host(format!("sandbox user {name}"), why, fix_user));
        }
    }
    let home = &spec.sandbox_home;
    for other in passwd.iter().filter(|a| &a.name != name) {
        let why = if &other.home == home {
            format!("is the home of account {} (uid {})", other.name, other.uid)
        } else if other.home.starts_with(home) && other.home.components().count() > 1 {
            format!(
                "holds {}, the home of account {} (uid {})",
                other.home.display(),
                other.name,
                other.uid
            )
        } else {
            continue;
        };
        problems.push(Error::host(
            format!("--sandbox-home {}", home.display()),
            format!("{why}: the agent owns its home and everything in it"),
            format!("give a directory of its own, e.g. --sandbox-home /home/{name}"),
        ));
    }
    problems
}

const DEFAULT_UID_MIN: u32 = 1000;

/// `UID_MIN` from login.defs(5) text, or its default.
fn uid_min(login_defs: &str) -> u32 {
    login_defs
        .lines()
        .rev()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("UID_MIN")).then(|| w.next()?.parse().ok()).flatten()
        })
        .unwrap_or(DEFAULT_UID_MIN)
}

/// Whether shadow(5) gives `name` a password one could log in with (an
/// empty field lets anyone in; `!` and `*` lock the account).
fn has_password(shadow: &str, name: &str) -> bool {
    shadow.lines().any(|l| {
        let mut f = l.split(':');
        f.next() == Some(name) && f.next().is_some_and(|p| !p.starts_with(['!', '*']))
    })
}

/// A link or namespace with our name that no record of ours accounts for
/// belongs to someone else: taking it over, or deleting it at --disable,
/// would touch what is not ours.
fn foreign_objects(spec: &Spec, state: Option<&State>) -> crate::Result<Vec<Error>> {
    let recorded = |id: &str| state.is_some_and(|s| s.get(id).is_some());
    let mut out = Vec::new();
    if !recorded("veth") {
        if let Some(l) = Netlink::host()?.link(&spec.net.host_if)? {
            if l.alias.as_deref() != Some(&veth_alias(&spec.name)) {
                let kind = l.kind.as_deref().unwrap_or("link");
                out.push(Error::host(
                    format!("interface {}", spec.net.host_if),
                    format!(
                        "a {kind} of that name exists and is not ours (no alias {:?}, no state record)",
                        veth_alias(&spec.name)
                    ),
                    format!(
                        "if it is a leftover, delete it (ip link del {}); otherwise pick another --name",
                        spec.net.host_if
                    ),
                ));
            }
        }
    }
    let ns_dir = spec.root.netns_dir();
    if !recorded("netns") && crate::sys::netns::exists(&ns_dir, &spec.net.netns) {
        out.push(Error::host(
            format!("network namespace {}", spec.net.netns),
            format!(
                "{} exists and no state record says setup made it",
                ns_dir.join(&spec.net.netns).display()
            ),
            format!(
                "if it is a leftover of this sandbox (its state record was lost), run `sandbox setup --disable \
                 --name {}`, which removes what is named after it and carries our mark; otherwise pick another --name",
                spec.name
            ),
        ));
    }
    Ok(out)
}

/// Our subnet against every address and route the host already has, but
/// for those on our own veth (a re-run must not trip over itself).
fn address_clashes(spec: &Spec, state: Option<&State>) -> crate::Result<Vec<Error>> {
    let subnet = spec.net.subnet();
    let fix = "pick --host-ip/--sandbox-ip in a range the host does not use, e.g. 10.231.0.1 and 10.231.0.2, \
               or let sandbox choose with --subnet auto";
    let clashes: Vec<(Ipv4Net, InUse)> = networks_in_use(spec, state)?
        .into_iter()
        .filter(|(net, _)| overlaps(net, &subnet))
        .collect();
    if clashes.is_empty() {
        return Ok(Vec::new());
    }
    let nl = Netlink::host()?;
    clashes
        .into_iter()
        .map(|(_, used)| {
            Ok(Error::host(
                format!("subnet {subnet}"),
                format!("overlaps {}", used.describe(&nl)?),
                fix,
            ))
        })
        .collect()
}

/// What uses a network: an address or a route, and on which link.
#[derive(Debug, Clone)]
pub struct InUse {
    /// "address 10.0.0.5/24", "route 10.1.0.0/16 via 10.0.0.1".
    what: String,
    /// The link, and the word that names it after `what` ("on", "dev").
    dev: Option<(u32, &'static str)>,
}

impl InUse {
    /// "address 10.0.0.5/24 on eth0": the link's name is looked up only
    /// here, for what is shown (a dump of every link grows with the
    /// number of sandboxes, and every setup would pay for it).
    pub fn describe(&self, nl: &Netlink) -> crate::Result<String> {
        let Some((index, word)) = self.dev else {
            return Ok(self.what.clone());
        };
        let name = nl.link_by_index(index)?.map_or_else(|| format!("#{index}"), |l| l.name);
        Ok(format!("{} {word} {name}", self.what))
    }
}

/// The IPv4 networks the host's addresses and routes use, each with what
/// uses it, but for our own veth's.
pub fn networks_in_use(spec: &Spec, state: Option<&State>) -> crate::Result<Vec<(Ipv4Net, InUse)>> {
    let nl = Netlink::host()?;
    // Our own veth, by name: ours if it carries our alias, or our record
    // says we made it.
    let ours = nl
        .link(&spec.net.host_if)?
        .filter(|l| {
            l.alias.as_deref() == Some(&veth_alias(&spec.name)) || state.is_some_and(|s| s.get("veth").is_some())
        })
        .map(|l| l.index);
    let mut out = Vec::new();
    for a in nl.addresses()? {
        let std::net::IpAddr::V4(ip) = a.addr else { continue };
        if Some(a.index) == ours {
            continue;
        }
        let Ok(net) = Ipv4Net::new(ip, a.prefix) else { continue };
        out.push((
            net,
            InUse {
                what: format!("address {ip}/{}", a.prefix),
                dev: Some((a.index, "on")),
            },
        ));
    }
    for r in nl.routes_v4()? {
        // Local and broadcast routes mirror the addresses above.
        if r.dst.prefix_len() == 0 || r.oif.is_some() && r.oif == ours || r.table == 255 {
            continue;
        }
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        out.push((
            r.dst,
            InUse {
                what: format!("route {}{via}", r.dst),
                dev: r.oif.map(|i| (i, "dev")),
            },
        ));
    }
    Ok(out)
}

/// Whether two networks share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `--root` tree with these accounts (passwd lines) and shadow lines.
    fn tree(passwd: &str, shadow: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("etc");
        let base = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n";
        std::fs::write(d.path().join("etc/passwd"), format!("{base}{passwd}")).expect("passwd");
        std::fs::write(
            d.path().join("etc/shadow"),
            format!("alice:$y$hash:19000::::::\n{shadow}"),
        )
        .expect("shadow");
        d
    }

    fn problems(d: &tempfile::TempDir, flags: &[&str]) -> String {
        let mut all = vec!["--root", d.path().to_str().expect("utf8")];
        all.extend_from_slice(flags);
        identity(&crate::testutil::spec(&all))
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_system_account_without_login_or_one_setup_made_is_accepted() {
        let d = tree(
            &format!(
                "sb:x:990:990:{}:/home/sb:/bin/bash\nsvc:x:991:991:svc:/srv/svc:/bin/bash\nlocked:x:992:992::/home/locked:/bin/bash\n",
                users::COMMENT
            ),
            "sb:!:19000::::::\nsvc:$y$pw:19000::::::\nlocked:!$y$pw:19000::::::\n",
        );
        assert_eq!(problems(&d, &["--name", "sb", "--sandbox-home", "/home/sb"]), "");
        assert_eq!(
            problems(&d, &["--name", "locked", "--sandbox-home", "/home/locked"]),
            ""
        );
        assert_eq!(
            problems(&d, &["--name", "fresh", "--sandbox-home", "/home/fresh"]),
            "",
            "setup creates it"
        );
    }

    #[test]
    fn root_people_and_accounts_that_log_in_are_refused() {
        let d = tree(
            "toor:x:0:0::/home/toor:/usr/sbin/nologin\nsvc:x:991:991:svc:/srv/svc:/bin/bash\nbob:x:1001:1001::/home/bob:/usr/sbin/nologin\n",
            "svc:$y$pw:19000::::::\n",
        );
        let cases = [
            ("toor", "/home/toor", "uid 0"),
            ("alice", "/home/alice", "uid 1000"),
            ("bob", "/home/bob", "uid 1001"),
            ("svc", "/srv/svc", "can log in"),
        ];
        for (name, home, needle) in cases {
            let p = problems(&d, &["--name", name, "--sandbox-home", home]);
            assert!(p.contains(needle) && p.contains("fix:"), "{name}: {needle:?} in {p}");
        }
        std::fs::write(d.path().join("etc/login.defs"), "# x\nUID_MIN\t 2000\n").expect("login.defs");
        assert!(!problems(&d, &["--name", "bob", "--sandbox-home", "/home/bob"]).contains("uid 1001"));
    }

    #[test]
    fn another_accounts_home_or_a_dir_holding_it_is_refused() {
        let d = tree("", "");
        let p = problems(&d, &["--name", "sb", "--sandbox-home", "/home/alice"]);
        assert!(p.contains("is the home of account alice") && p.contains("fix:"), "{p}");
        let d = tree("svc:x:991:991::/data/agents/svc:/usr/sbin/nologin\n", "");
        let p = problems(&d, &["--name", "sb", "--sandbox-home", "/data/agents"]);
        assert!(p.contains("holds /data/agents/svc, the home of account svc"), "{p}");
        assert_eq!(problems(&d, &["--name", "sb", "--sandbox-home", "/data/sb"]), "");
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let n = |s: &str| s.parse::<Ipv4Net>().expect("net");
        assert!(overlaps(&n("10.200.0.0/30"), &n("10.0.0.0/8")));
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.200.0.0/30")));
        assert!(overlaps(&n("10.200.0.0/30"), &n("10.200.0.2/32")));
        assert!(!overlaps(&n("10.200.0.0/30"), &n("10.200.0.4/30")));
        assert!(!overlaps(&n("10.200.0.0/30"), &n("192.168.0.0/16")));
    }
}
