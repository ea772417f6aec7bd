//! The tests of [`crate::ports`], kept out of that file because the operator's and the
//! inference server's tests include it by path and would run them again.

use std::net::TcpListener;

use crate::ports::{CLUSTER_LOWEST, LOWEST, ephemeral_range_start, free_port};

#[test]
fn ports_are_distinct_free_and_below_the_ephemeral_range() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    let below = CLUSTER_LOWEST.min(ephemeral_range_start());
    assert!(
        ports.iter().all(|port| (LOWEST..below).contains(port)),
        "below the clusters' and ephemeral ports: {ports:?}"
    );
    assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
}
