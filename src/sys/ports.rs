//! Who listens on a port in this network namespace, from the kernel's
//! socket tables (`/proc/net/tcp`, `/proc/net/udp`) and the owners of
//! those sockets (`/proc/<pid>/fd`). Reads only.

use std::net::Ipv4Addr;

/// One IPv4 socket bound to the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub proto: &'static str,
    pub addr: Ipv4Addr,
    pub inode: u64,
}

/// The IPv4 sockets bound to `port`: TCP ones that listen, every UDP one.
pub fn bound_v4(port: u16) -> Vec<Bound> {
    let mut out = Vec::new();
    for (proto, path, listen_only) in [("TCP", "/proc/net/tcp", true), ("UDP", "/proc/net/udp", false)] {
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(parse(&text, proto, port, listen_only));
        }
    }
    out
}

/// Lines of a `/proc/net/{tcp,udp}` table: `sl local rem st … inode …`,
/// the local address as little-endian hex `0100007F:0035`.
fn parse(text: &str, proto: &'static str, port: u16, listen_only: bool) -> Vec<Bound> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            let state = f.get(3)?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            if u16::from_str_radix(p, 16).ok()? != port || (listen_only && *state != "0A") {
                return None;
            }
            let raw = u32::from_str_radix(addr, 16).ok()?;
            Some(Bound {
                proto,
                addr: Ipv4Addr::from(raw.swap_bytes()),
                inode,
            })
        })
        .collect()
}

/// The process holding socket `inode`: its pid and command line.
pub fn owner(inode: u64) -> Option<(u32, Vec<String>)> {
    let want = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()));
        if holds {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            return Some((pid, args));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_on_the_port_are_read_from_the_table() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0
   1: 0100C80A:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 100 0 0 10 0
   2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0
   3: 0200C80A:0035 0100C80A:A000 01 00000000:00000000 00:00000000 00000000     0        0 4545 1 0 100 0 0 10 0
";
        let found = parse(tcp, "TCP", 53, true);
        assert_eq!(
            found,
            vec![
                Bound {
                    proto: "TCP",
                    addr: Ipv4Addr::UNSPECIFIED,
                    inode: 4242
                },
                Bound {
                    proto: "TCP",
                    addr: Ipv4Addr::new(10, 200, 0, 1),
                    inode: 4343
                },
            ],
            "listeners on :53 only (not :80, not an established connection)"
        );
        let udp = parse(tcp, "UDP", 53, false);
        assert_eq!(udp.len(), 3, "any UDP socket bound to :53");
    }
}
