//! The `nft` binary, driven through the `nftables` crate. We only ever
//! touch tables we own, and read back only our own table: parsing the
//! whole ruleset breaks across nft versions (DESIGN.md, pitfalls).

use nftables::helper::{self, NftablesError};
use nftables::schema::Nftables;

use crate::error::{Error, Result};
use crate::firewall::{self, ChainShape, Table};

const NFT: &str = "nft";

/// Replace our table with `t`, atomically (one nft batch).
///
/// `first`: no record of ours says the table was ever installed, so try to
/// create it (cheap); only if one of that name exists after all (a record
/// lost behind our back) replace it.
pub fn apply(t: &Table, first: bool) -> Result<()> {
    let op = format!("install table inet {}", t.name);
    let batch = |fresh| {
        firewall::render::to_nft_value(t, fresh).map_err(|e| Error::Nft {
            op: op.clone(),
            cause: e.to_string(),
        })
    };
    if first {
        match run(&batch(true)?, &op) {
            Err(Error::Nft { cause, .. }) if cause.contains("File exists") => {}
            done => return done,
        }
    }
    run(&batch(false)?, &op)
}

/// Delete our table if present; absent is fine.
pub fn delete_table(name: &str) -> Result<()> {
    let batch = Nftables {
        objects: firewall::render::delete_table_cmds(name).into(),
    };
    run(&batch, &format!("delete table inet {name}"))
}

/// Empty sets of ours (their elements and counters), in one batch.
pub fn flush_sets(table: &str, sets: &[&str]) -> Result<()> {
    let objects: Vec<serde_json::Value> = sets
        .iter()
        .map(|s| serde_json::json!({"flush": {"set": {"family": "inet", "table": table, "name": s}}}))
        .collect();
    run(
        &serde_json::json!({ "nftables": objects }),
        &format!("flush the refusal sets of inet {table}"),
    )
}

/// Our table as `nft` lists it, reduced to its shape; None when absent.
pub fn table_shape(name: &str) -> Result<Option<Vec<ChainShape>>> {
    Ok(list_table(name)?.map(|doc| shape_of(&doc)))
}

/// `nft -j list table inet <name>` (sets with their elements included),
/// parsed; None when absent. One `nft` run.
pub fn list_table(name: &str) -> Result<Option<serde_json::Value>> {
    let args = ["list", "table", "inet", name];
    let out = match helper::get_current_ruleset_raw(Some(NFT), args) {
        Ok(out) => out,
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => return Ok(None),
        Err(e) => return Err(nft_error(&format!("list table inet {name}"), e)),
    };
    serde_json::from_str(&out).map(Some).map_err(|e| Error::Nft {
        op: format!("list table inet {name}"),
        cause: format!("unreadable JSON from nft: {e}"),
    })
}

/// Chains in listing order, each with the comments of its rules in order.
fn shape_of(doc: &serde_json::Value) -> Vec<ChainShape> {
    let mut chains: Vec<ChainShape> = Vec::new();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = obj.get("chain") {
            chains.push(ChainShape {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                policy: c.get("policy").and_then(|p| p.as_str()).map(String::from),
                rules: vec![],
            });
        } else if let Some(r) = obj.get("rule") {
            let chain = r["chain"].as_str().unwrap_or_default();
            let comment = r
                .get("comment")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string();
            if let Some(c) = chains.iter_mut().find(|c| c.name == chain) {
                c.rules.push(comment);
            }
        }
    }
    chains
}

/// Whether our table (or our part of the shared host table) is in place
/// exactly as `t` generates it: the fingerprint is there and no chain was
/// flushed, edited or loosened, no dispatch element lost.
pub fn is_current(t: &Table) -> Result<bool> {
    Ok(matches(t, listing(t)?.as_ref()))
}

/// `t` as `nft` lists it: the whole table of our own, or in the shared
/// host table only `t`'s part (its chains, sets, the base and the maps).
pub fn listing(t: &Table) -> Result<Option<serde_json::Value>> {
    match t.dispatch {
        None => list_table(&t.name),
        Some(_) => firewall::host_table::list(t),
    }
}

/// Whether a listing (`listing`) shows `t` as generated now.
pub fn matches(t: &Table, listed: Option<&serde_json::Value>) -> bool {
    let Some(mut have) = listed.map(shape_of) else {
        return false;
    };
    if t.dispatch.is_some() && listed.is_some_and(|doc| !firewall::host_table::dispatch_ok(t, doc)) {
        return false;
    }
    let mut want = match t.dispatch {
        None => t.shape(),
        Some(_) => firewall::host_table::shape(t),
    };
    have.sort_by(|a, b| a.name.cmp(&b.name));
    want.sort_by(|a, b| a.name.cmp(&b.name));
    have == want
}

/// `nft -j list set inet <table> <set>`, parsed; None when the table or
/// the set is absent.
pub fn list_set(table: &str, set: &str) -> Result<Option<serde_json::Value>> {
    let op = format!("list set inet {table} {set}");
    let out = match helper::get_current_ruleset_raw(Some(NFT), ["list", "set", "inet", table, set]) {
        Ok(out) => out,
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => return Ok(None),
        Err(e) => return Err(nft_error(&op, e)),
    };
    serde_json::from_str(&out).map(Some).map_err(|e| Error::Nft {
        op,
        cause: format!("unreadable JSON from nft: {e}"),
    })
}

/// Whether a table of that name exists.
pub fn table_exists(name: &str) -> Result<bool> {
    Ok(table_shape(name)?.is_some())
}

/// The `nft` binary on PATH (no process is started: preflight stays cheap
/// and side-effect free; a kernel without nf_tables shows at apply).
pub fn available() -> std::result::Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join(NFT)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    if found {
        Ok(())
    } else {
        Err(format!("`{NFT}` is not on PATH ({})", path.to_string_lossy()))
    }
}

/// The kernel has nf_tables: loaded as a module shows under /sys/module;
/// built in (without parameters) it does not, so ask the kernel once over
/// nfnetlink (its ruleset generation), which also makes it load the
/// module, as `nft` would, without starting a process.
pub fn kernel_support() -> std::result::Result<(), String> {
    if std::path::Path::new("/sys/module/nf_tables").exists() {
        return Ok(());
    }
    super::nfnl::probe()
}

/// Run a JSON batch (`nft -j -f -`); what nft printed (listings). Its
/// stderr is read, not inherited (the `nftables` crate's runner lets it
/// through to ours): an error's cause is in it.
pub fn run_json(batch: &serde_json::Value, op: &str) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let failed = |cause: String| Error::Nft { op: op.into(), cause };
    let mut child = Command::new(NFT)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run `{NFT}`: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.to_string().as_bytes())
            .map_err(|e| failed(format!("cannot write to `{NFT}`: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("cannot wait for `{NFT}`: {e}")))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    String::from_utf8(out.stdout).map_err(|e| failed(format!("output not UTF-8: {e}")))
}

/// Run a batch of `list` commands (our own chains, sets, maps by name) and
/// merge what they print into one document; None when any of them is not
/// there (nft then fails the whole run).
pub fn list_objects(batch: &serde_json::Value, op: &str) -> Result<Option<serde_json::Value>> {
    let out = match run_json(batch, op) {
        Ok(out) => out,
        Err(Error::Nft { cause, .. }) if cause.contains("No such file") => return Ok(None),
        Err(e) => return Err(e),
    };
    // One JSON document per list command.
    let mut merged = Vec::new();
    for doc in serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>() {
        let doc = doc.map_err(|e| Error::Nft {
            op: op.into(),
            cause: format!("unreadable JSON from nft: {e}"),
        })?;
        merged.extend(doc["nftables"].as_array().cloned().unwrap_or_default());
    }
    Ok(Some(serde_json::json!({ "nftables": merged })))
}

fn run(batch: &impl serde::Serialize, op: &str) -> Result<()> {
    let payload = serde_json::to_value(batch).map_err(|e| Error::Nft {
        op: op.into(),
        cause: e.to_string(),
    })?;
    run_json(&payload, op).map(drop)
}

fn nft_error(op: &str, e: NftablesError) -> Error {
    let cause = match e {
        NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
        other => other.to_string(),
    };
    Error::Nft { op: op.into(), cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_reads_chains_policies_and_rule_comments() {
        let doc = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "t"}},
            {"chain": {"family": "inet", "table": "t", "name": "gen_ab"}},
            {"chain": {"family": "inet", "table": "t", "name": "input", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
            {"rule": {"family": "inet", "table": "t", "chain": "input", "expr": [], "comment": "one"}},
            {"rule": {"family": "inet", "table": "t", "chain": "input", "expr": []}}
        ]});
        let s = shape_of(&doc);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            ChainShape {
                name: "gen_ab".into(),
                policy: None,
                rules: vec![]
            }
        );
        assert_eq!(s[1].policy.as_deref(), Some("drop"));
        assert_eq!(s[1].rules, vec!["one".to_string(), String::new()]);
    }
}
