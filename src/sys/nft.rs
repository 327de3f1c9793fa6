//! The `nft` binary, driven through the `nftables` crate. We only ever
//! touch tables we own, and read back only our own table: parsing the
//! whole ruleset breaks across nft versions (DESIGN.md, pitfalls).

use nftables::helper::{self, NftablesError};
use nftables::schema::Nftables;

use crate::error::{Error, Result};
use crate::firewall::{self, Table};

const NFT: &str = "nft";

/// Replace our table with `t`, atomically (one nft batch).
pub fn apply(t: &Table) -> Result<()> {
    run(&firewall::to_nft_json(t), &format!("install table inet {}", t.name))
}

/// Delete our table if present; absent is fine.
pub fn delete_table(name: &str) -> Result<()> {
    let batch = Nftables {
        objects: firewall::render::delete_table_cmds(name).into(),
    };
    run(&batch, &format!("delete table inet {name}"))
}

/// Names of the chains in our table, or None when there is no such table.
pub fn table_chains(name: &str) -> Result<Option<Vec<String>>> {
    let args = ["list", "table", "inet", name];
    let out = match helper::get_current_ruleset_raw(Some(NFT), args) {
        Ok(out) => out,
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => return Ok(None),
        Err(e) => return Err(nft_error(&format!("list table inet {name}"), e)),
    };
    let doc: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Nft {
        op: format!("list table inet {name}"),
        cause: format!("unreadable JSON from nft: {e}"),
    })?;
    let chains = doc["nftables"]
        .as_array()
        .map(|objs| {
            objs.iter()
                .filter_map(|o| o.get("chain")?.get("name")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(chains))
}

/// Whether our table is in place exactly as `t` generates it.
pub fn is_current(t: &Table) -> Result<bool> {
    Ok(table_chains(&t.name)?.is_some_and(|chains| chains.contains(&t.marker_chain())))
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

fn run(batch: &Nftables, op: &str) -> Result<()> {
    let payload = serde_json::to_string(batch).map_err(|e| Error::Nft {
        op: op.into(),
        cause: e.to_string(),
    })?;
    helper::apply_ruleset_raw(&payload, Some(NFT), std::iter::empty::<&str>())
        .map(drop)
        .map_err(|e| nft_error(op, e))
}

fn nft_error(op: &str, e: NftablesError) -> Error {
    let cause = match e {
        NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
        other => other.to_string(),
    };
    Error::Nft { op: op.into(), cause }
}
