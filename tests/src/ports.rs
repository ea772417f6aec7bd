//! Loopback ports for the servers tests start as processes, found below the kernel's
//! ephemeral range. A port that `bind(0)` hands out comes from that range, where the
//! kernel also puts the source ports of outgoing connections: in the moment between
//! finding it free and the server binding it, a Prometheus scrape or a client of
//! another test can take it, and the server dies with "address in use".
//!
//! One definition for every test crate: the operator's and the inference server's
//! tests include this file by path (they cannot depend on this crate).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// The lowest port handed out.
pub const LOWEST: u16 = 20_000;

/// The lowest port of the local control planes the tests start (`scripts/cluster/up.sh`
/// is given it as `MATTE_CLUSTER_LOWEST_PORT`): tests hand out ports below it, clusters
/// take theirs above. A cluster starting while a test's server, given a port found
/// free, still loads its model before binding it would otherwise find the same port
/// free and take it for etcd or the apiserver.
pub const CLUSTER_LOWEST: u16 = 28_500;

/// A loopback port no other call of this process has returned, free when checked.
/// Ports are handed out upwards from an offset of this process's own, so that tests
/// running at once within a process never share one and processes rarely do.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = CLUSTER_LOWEST.min(ephemeral_range_start()) - LOWEST;
    // Offsets 128 apart that never wrap round onto another's.
    let offset = (std::process::id() % u32::from((span / 128).max(1))) as u16 * 128;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (offset.wrapping_add(step)) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOWEST} and {}", LOWEST + span);
}

/// The first port of the kernel's ephemeral range; Linux's default (32768) where it
/// cannot be read or leaves too little room below it.
pub fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|start: &u16| *start >= LOWEST + 4096)
        .unwrap_or(32_768)
}
