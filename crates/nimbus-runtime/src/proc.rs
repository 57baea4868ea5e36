//! `/proc` parsing and verified process-group signalling.
//!
//! Every instance leads its own process group (pgid == pid of `sh -c`), and we record the leader's
//! start time (field 22 of `/proc/PID/stat`). A group is signalled only when it is provably ours:
//! - `/proc/PGID` exists with the recorded start time: our leader (running or a zombie), or
//! - `/proc/PGID` does not exist: the leader is gone and the id was not reused. Linux never hands
//!   out a pid still used as a process-group id, so any members left are our leader's descendants.
//!
//! If `/proc/PGID` exists with another start time, the pid was recycled, which also means our
//! group is empty; nothing is sent.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgrp, Pid};

use crate::DriverError;

#[cfg(test)]
mod tests;

/// The few fields of `/proc/PID/stat` the driver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Zombies and dead tasks do not count as running.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the *last* `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 of the stat line.
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(5 - 3)?.parse().ok()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    Some(ProcStat {
        state,
        pgrp,
        start_time,
    })
}

/// The stat of a pid, or `None` when there is no such process (or it cannot be read).
pub(crate) fn stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The start time of a process, to record next to its pid.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Whether `pid` is running and is the process that started at `start_time`.
pub(crate) fn is_alive(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.is_running())
}

/// Pids of the running (non-zombie) members of process group `pgid`.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.is_running()))
        .collect()
}

/// Whether group `pgid`, led by a process that started at `start_time`, is provably ours (see the
/// module doc). Our own process group and pids 0/1 are never ours.
pub(crate) fn group_is_ours(pgid: i32, start_time: u64) -> bool {
    if pgid <= 1 || pgid == getpgrp().as_raw() {
        return false;
    }
    match stat(pgid) {
        Some(s) => s.start_time == start_time,
        None => true,
    }
}

/// Sends `signal` to the whole group if it is ours. `Ok(false)` when nothing was signalled (not
/// ours, or no process left).
pub(crate) fn signal_group(
    pgid: i32,
    start_time: u64,
    signal: Signal,
) -> Result<bool, DriverError> {
    if !group_is_ours(pgid, start_time) {
        tracing::debug!(pgid, ?signal, "Process group is not ours; not signalling.");
        return Ok(false);
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(source) => Err(DriverError::Signal {
            pgid,
            signal: signal.as_str(),
            source,
        }),
    }
}

/// Whether any running member of our group `pgid` remains.
pub(crate) fn group_has_members(pgid: i32, start_time: u64) -> bool {
    group_is_ours(pgid, start_time)
        && group_may_have_members(pgid)
        && !group_members(pgid).is_empty()
}

/// False when the kernel knows no process (not even a zombie) in group `pgid`: probing with
/// signal 0 sends nothing and spares a scan of every process in `/proc`, which with a thousand
/// instances made each stop after a mass crash cost milliseconds.
fn group_may_have_members(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Polls until no running member of our group `pgid` is left, for at most `timeout`.
/// Returns whether the group is gone.
pub(crate) async fn wait_group_gone(pgid: i32, start_time: u64, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let members = tokio::task::spawn_blocking(move || group_has_members(pgid, start_time))
            .await
            .unwrap_or(false);
        if !members {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
