//! Thin adapters over the kernel and host tools. No policy lives here: the
//! steps decide what to do, these modules only know how.

pub mod agent_home;
pub mod bounded;
pub mod files;
pub mod netlink;
pub mod netns;
pub mod nfnl;
pub mod nft;
pub mod nft_set;
pub mod owner;
pub mod ports;
pub mod sysctl;
pub mod systemd;
pub mod users;
