//! The open-file limit: raised at start towards the hard limit, and the
//! estimate `check` warns with when a config cannot fit under it.
//!
//! Each served resource holds a listening socket, the kubelet's connection
//! to it and, briefly, a registration channel; gRPC, inotify and the pipes
//! need a few dozen more.

use std::io;

/// Descriptors the daemon needs besides its resources.
pub const BASE_FILES: u64 = 64;
/// Descriptors each resource needs at most in steady state, with headroom.
pub const FILES_PER_RESOURCE: u64 = 4;

/// How many open files a daemon serving `resources` resources needs.
pub fn files_needed(resources: usize) -> u64 {
    BASE_FILES + FILES_PER_RESOURCE * resources as u64
}

fn get() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The (soft, hard) limits on open files.
///
/// # Errors
///
/// When `getrlimit(2)` fails.
pub fn nofile() -> io::Result<(u64, u64)> {
    let lim = get()?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft limit on open files to the hard limit (no privilege is
/// needed for that). Returns the (old, new) soft limits.
///
/// # Errors
///
/// When the limit cannot be read or set.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut lim = get()?;
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// (files open now, soft limit), when both can be read.
pub fn open_files() -> Option<(u64, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((open, nofile().ok()?.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (_, new) = raise_nofile().unwrap();
        let (soft, hard) = nofile().unwrap();
        assert_eq!(new, soft);
        assert_eq!(soft, hard);
        let (open, limit) = open_files().unwrap();
        assert!(open > 0 && limit == soft);
    }

    #[test]
    fn estimate_grows_with_resources() {
        assert!(files_needed(2000) > 2000 * 2);
        assert!(files_needed(0) >= BASE_FILES);
    }
}
