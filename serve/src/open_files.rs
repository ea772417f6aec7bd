//! The open files a server may hold: every connection is one, and a container's soft
//! limit is often 1024 while `--max-connections` is 1024 for a pod and 4096 for a
//! gateway. Past the limit, accepting fails, and so does every connection the gateway
//! opens to a pod, which it takes for the pod refusing it: healthy pods counted out. So
//! a server raises its soft limit to the hard one at start, as Go's runtime does for its
//! programs, and says so when even that leaves too few.

use std::io;

/// Files a server opens beside its clients' connections: its listener, its logs, its
/// connections to the pods or the apiserver, the runtime's own.
pub const FILES_BESIDE_CONNECTIONS: u64 = 256;

/// The soft and hard limits on open files after raising the soft one to the hard one.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Whether a soft limit of `open_files` leaves room for `max_connections` clients and
/// what the server opens beside them.
pub fn room_for_connections(open_files: u64, max_connections: u64) -> bool {
    max_connections.saturating_add(FILES_BESIDE_CONNECTIONS) <= open_files
}

/// Raises the limit and logs it, warning when `max_connections` would outrun it.
pub fn prepare_for_connections(max_connections: u64) {
    match raise_open_files_limit() {
        Ok((soft, hard)) if !room_for_connections(soft, max_connections) => tracing::warn!(
            open_files = soft,
            hard_limit = hard,
            max_connections,
            "the open-file limit leaves too few files for --max-connections: connections past it fail \
             (raise the container runtime's nofile limit, or lower --max-connections)"
        ),
        Ok((soft, _)) => tracing::debug!(open_files = soft, max_connections, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = raise_open_files_limit().expect("the limit reads");
        assert_eq!(soft, hard, "raised as far as it goes");
        assert_eq!(raise_open_files_limit().expect("again"), (soft, hard), "and it stays");
    }

    #[test]
    fn connections_need_their_files_and_a_margin() {
        assert!(room_for_connections(4096 + FILES_BESIDE_CONNECTIONS, 4096));
        assert!(!room_for_connections(1024, 1024), "a default soft limit is too few for a pod's default");
        assert!(!room_for_connections(u64::MAX - 1, u64::MAX), "no overflow");
    }
}
