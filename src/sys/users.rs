//! Users and groups: look them up and create or remove them with the
//! host's own tools (`useradd`, `userdel`, `groupdel`). Under `--root`
//! every tool gets `--prefix <root>` and lookups read `<root>/etc/passwd`
//! and `<root>/etc/group` (the `uzers` crate only knows the real host's).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::spec::Root;

/// One line of a passwd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    pub gecos: String,
}

/// The comment (GECOS) `useradd` gives the users setup creates: the host's
/// own record of which user setup made, so a user kept by `--disable` is
/// still known as ours (and `--purge` may remove it) after a new setup.
pub const COMMENT: &str = "OpenClaw sandbox (sandbox setup)";

/// Parse passwd(5) text. Comment, blank and malformed lines (and NIS
/// `+`/`-` entries) are skipped: they name nobody we could own files as.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some(Account {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                shell: f[6].to_string(),
                gecos: f[4].to_string(),
            })
        })
        .collect()
}

/// Parse group(5) text into (name, gid) pairs.
pub fn parse_group(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 4 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?))
        })
        .collect()
}

fn is_host(root: &Root) -> bool {
    root.0 == Path::new("/")
}

fn read_db(root: &Root, file: &str) -> Result<String> {
    let path = root.path(file);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The account `name`, if it exists.
pub fn user(root: &Root, name: &str) -> Result<Option<Account>> {
    if is_host(root) {
        return Ok(uzers::get_user_by_name(name).map(|u| {
            use uzers::os::unix::UserExt;
            Account {
                name: name.to_string(),
                uid: u.uid(),
                gid: u.primary_group_id(),
                home: u.home_dir().to_path_buf(),
                shell: u.shell().to_string_lossy().into_owned(),
                gecos: u.gecos().to_string_lossy().into_owned(),
            }
        }));
    }
    Ok(parse_passwd(&read_db(root, "/etc/passwd")?)
        .into_iter()
        .find(|a| a.name == name))
}

/// The gid of group `name`, if it exists.
pub fn group(root: &Root, name: &str) -> Result<Option<u32>> {
    if is_host(root) {
        return Ok(uzers::get_group_by_name(name).map(|g| g.gid()));
    }
    Ok(parse_group(&read_db(root, "/etc/group")?)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, gid)| gid))
}

/// The arguments of `useradd` for a system user with its own group, the
/// given home (not created: the step makes it, without a skeleton) and
/// bash as its shell.
/// `group_exists`: join the existing group `name` instead of making it.
pub fn useradd_args(root: &Root, name: &str, home: &Path, group_exists: bool) -> Vec<String> {
    let mut a = prefix(root);
    if group_exists {
        a.extend(["--gid".to_string(), name.to_string()]);
    } else {
        a.push("--user-group".into());
    }
    a.extend(
        [
            "--system",
            "--no-create-home",
            "--home-dir",
            &home.to_string_lossy(),
            "--shell",
            "/bin/bash",
            "--comment",
            COMMENT,
            name,
        ]
        .map(String::from),
    );
    a
}

fn prefix(root: &Root) -> Vec<String> {
    if is_host(root) {
        Vec::new()
    } else {
        vec!["--prefix".into(), root.0.to_string_lossy().into_owned()]
    }
}

pub fn useradd(root: &Root, name: &str, home: &Path, group_exists: bool) -> Result<()> {
    tool(
        "useradd",
        &useradd_args(root, name, home, group_exists),
        &format!("user {name}"),
    )
}

pub fn userdel(root: &Root, name: &str) -> Result<()> {
    let mut a = prefix(root);
    a.push(name.into());
    tool("userdel", &a, &format!("user {name}"))
}

pub fn groupdel(root: &Root, name: &str) -> Result<()> {
    let mut a = prefix(root);
    a.push(name.into());
    tool("groupdel", &a, &format!("group {name}"))
}

fn tool(bin: &str, args: &[String], object: &str) -> Result<()> {
    let out = Command::new(bin).args(args).output().map_err(|e| {
        Error::host(
            object,
            format!("cannot run `{bin}`: {e}"),
            "install the shadow tools (Debian: apt-get install passwd; Fedora: dnf install shadow-utils)",
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::host(
        object,
        format!(
            "`{bin} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        "fix what the tool says, then re-run",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_parse_and_junk_is_skipped() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\n\n+nis\nbad:line\n\
                    sandbox:x:999:998:OpenClaw:/home/sandbox:/bin/bash\nnum:x:notanumber:1::/:/bin/sh\n";
        let got = parse_passwd(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            Account {
                name: "sandbox".into(),
                uid: 999,
                gid: 998,
                home: "/home/sandbox".into(),
                shell: "/bin/bash".into(),
                gecos: "OpenClaw".into(),
            }
        );
    }

    #[test]
    fn group_lines_parse() {
        let got = parse_group("root:x:0:\nsandbox:x:998:\nwheel:x:10:alice,bob\nbroken\n");
        assert_eq!(
            got,
            vec![("root".into(), 0), ("sandbox".into(), 998), ("wheel".into(), 10)]
        );
    }

    #[test]
    fn lookups_under_root_read_the_tree() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().to_path_buf());
        std::fs::create_dir_all(root.path("/etc")).expect("etc");
        assert_eq!(user(&root, "sandbox").expect("no passwd is no user"), None);
        std::fs::write(root.path("/etc/passwd"), "sandbox:x:999:998::/srv/sb:/bin/bash\n").expect("w");
        std::fs::write(root.path("/etc/group"), "sandbox:x:998:\n").expect("w");
        assert_eq!(user(&root, "sandbox").expect("lookup").map(|a| a.uid), Some(999));
        assert_eq!(group(&root, "sandbox").expect("lookup"), Some(998));
        assert_eq!(group(&root, "other").expect("lookup"), None);
    }

    #[test]
    fn useradd_gets_the_prefix_under_root_only() {
        let home = Path::new("/home/sandbox");
        let tree = useradd_args(&Root("/tmp/tree".into()), "sandbox", home, false);
        assert_eq!(&tree[..2], ["--prefix", "/tmp/tree"]);
        assert!(tree.contains(&"--no-create-home".to_string()), "{tree:?}");
        assert_eq!(tree.last().map(String::as_str), Some("sandbox"));
        let host = useradd_args(&Root("/".into()), "sandbox", home, true);
        assert!(!host.contains(&"--prefix".to_string()), "{host:?}");
        assert!(host.contains(&"--gid".to_string()) && !host.contains(&"--user-group".to_string()));
    }
}
