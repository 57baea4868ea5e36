//! Reading usage from the kernel: per-process CPU time and RSS from `/proc`, and cgroup v2
//! accounting. The parsers are pure; [`ProcSnapshot::read`] and [`read_cgroup_v2`] do the I/O.
//!
//! # CPU of a process group or tree
//! A process's CPU time is `utime + stime` (its own) `+ cutime + cstime` (children it has waited
//! for, recursively). Summing that over the *live* members counts every member exactly once:
//! a child still running counts itself; a reaped child is folded into its parent. The sum can
//! drop when a member exits without a member reaping it (e.g. the group leader reaped by Nimbus,
//! or an orphan reaped by init); [`crate::Meter`] treats a drop as "no new CPU", never negative.
//!
//! # Memory of a process group or tree
//! A lone process's memory is its RSS. Summing RSS over several members would count the pages
//! they share (after `fork`: a pre-forking server's workers) once per member, so for several the
//! sum is of each member's proportional set size (`Pss` in `/proc/PID/smaps_rollup`: every shared
//! page split between its sharers), and the RSS sum only when those files cannot be read. A
//! cgroup's `cpu.stat` `usage_usec` and `memory.current` have neither gap nor overlap and are
//! preferred when the instance has a cgroup.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::unistd::{sysconf, SysconfVar};

#[cfg(test)]
mod tests;

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {what}")]
    Parse { path: PathBuf, what: &'static str },
    #[error("cannot ask the kernel for {what}: {source}")]
    Sysconf {
        what: &'static str,
        source: nix::errno::Errno,
    },
}

/// The fields of `/proc/PID/stat` metering needs. Times are in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1.
    pub pid: i32,
    /// Field 3: `R`, `S`, `Z` (zombie), …
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Fields 14–17: user and system time of the process, and of its waited-for children.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Field 22: start time in clock ticks after boot (with the pid, identifies a process).
    pub start_time: u64,
    /// Field 24: resident set size in pages (the same count as `statm`'s second field).
    pub rss_pages: u64,
}

impl ProcStat {
    /// A live (non-zombie) member of process group `pgid`.
    pub fn in_group(&self, pgid: i32) -> bool {
        self.pgrp == pgid && self.state != 'Z'
    }

    /// Own plus reaped children's CPU time, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime
            .saturating_add(self.stime)
            .saturating_add(self.cutime)
            .saturating_add(self.cstime)
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // `fields[0]` is field 3.
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    Some(ProcStat {
        pid,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        utime: number(14)?,
        stime: number(15)?,
        // cutime/cstime are signed in the kernel's format but never negative in practice.
        cutime: field(16)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
        cstime: field(17)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
        start_time: number(22)?,
        rss_pages: number(24)?,
    })
}

/// `usage_usec` from a cgroup v2 `cpu.stat`: total CPU time of the cgroup, microseconds.
pub fn parse_cpu_stat_usage_usec(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        if key == "usage_usec" {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

/// The `Pss:` line of `/proc/PID/smaps_rollup`, in bytes (the file counts kB).
pub fn parse_smaps_rollup_pss(text: &str) -> Option<u64> {
    kib_field_bytes(text, "Pss:")
}

/// The `VmRSS:` line of `/proc/PID/status`, in bytes; absent for a zombie or a kernel thread.
pub fn parse_status_vm_rss(text: &str) -> Option<u64> {
    kib_field_bytes(text, "VmRSS:")
}

/// A `Key:   123 kB` line of a procfs file, in bytes.
fn kib_field_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let kib = line.strip_prefix(key)?.trim().strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok()?.checked_mul(1024)
    })
}

/// The resident memory of one process now (its `VmRSS`), or `None` once it is gone. One small
/// read, cheap enough to repeat every few milliseconds, unlike a [`ProcSnapshot`].
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_vm_rss(&text)
}

/// A cgroup v2 `memory.current`: bytes of memory charged to the cgroup.
pub fn parse_memory_current(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The cgroup v2 path in the text of `/proc/PID/cgroup` (the `0::/path` line), e.g.
/// `/system.slice/nimbus.service`. Join it under `/sys/fs/cgroup` to read its files.
pub fn parse_proc_cgroup_v2(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// Pids of the non-zombie processes whose process group is `pgid`.
pub fn group_members(stats: &[ProcStat], pgid: i32) -> Vec<i32> {
    stats
        .iter()
        .filter(|s| s.in_group(pgid))
        .map(|s| s.pid)
        .collect()
}

/// Pids of `root` and all its non-zombie descendants (by parent pid), in ascending order.
pub fn tree_members(stats: &[ProcStat], root: i32) -> Vec<i32> {
    let mut members = BTreeSet::new();
    if stats.iter().any(|s| s.pid == root && s.state != 'Z') {
        members.insert(root);
    }
    // Parents can have higher pids than their children (pid wrap-around), so repeat to a fixed point.
    loop {
        let before = members.len();
        for s in stats {
            if s.state != 'Z' && members.contains(&s.ppid) {
                members.insert(s.pid);
            }
        }
        if members.len() == before {
            return members.into_iter().collect();
        }
    }
}

/// CPU ticks → microseconds.
pub fn ticks_to_micros(ticks: u64, ticks_per_second: u64) -> u64 {
    let micros = u128::from(ticks) * 1_000_000 / u128::from(ticks_per_second.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// Usage of a set of processes at one moment (cumulative CPU, current RSS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSample {
    /// The processes counted; empty when the group or tree is gone.
    pub pids: Vec<i32>,
    /// Cumulative CPU time, microseconds.
    pub cpu_micros: u64,
    /// Resident memory now, bytes: a lone process's RSS, or the members' summed PSS (see the
    /// module doc).
    pub rss_bytes: u64,
}

/// One scan of `/proc`: the stat of every process, to sample many instances per tick.
#[derive(Debug, Clone)]
pub struct ProcSnapshot {
    /// The `/proc` scanned, for the few files read per group afterwards.
    root: PathBuf,
    ticks_per_second: u64,
    page_size: u64,
    stats: Vec<ProcStat>,
}

impl ProcSnapshot {
    /// Scans `/proc`. Processes that vanish during the scan are skipped.
    pub fn read() -> Result<Self, SampleError> {
        Self::read_at(Path::new("/proc"))
    }

    /// Scans a `/proc`-shaped directory (tests point it at a fake tree).
    pub fn read_at(root: &Path) -> Result<Self, SampleError> {
        let ticks_per_second = sysconf_value(SysconfVar::CLK_TCK, "clock ticks per second")?;
        let page_size = sysconf_value(SysconfVar::PAGE_SIZE, "the page size")?;
        let dir = std::fs::read_dir(root).map_err(|source| SampleError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let stats = dir
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                let pid: i32 = name.to_str()?.parse().ok()?;
                let text = std::fs::read_to_string(root.join(pid.to_string()).join("stat")).ok()?;
                parse_stat(&text)
            })
            .collect();
        Ok(ProcSnapshot {
            root: root.to_path_buf(),
            ticks_per_second,
            page_size,
            stats,
        })
    }

    /// Every process seen.
    pub fn stats(&self) -> &[ProcStat] {
        &self.stats
    }

    /// CPU and RSS of the live members of process group `pgid`.
    pub fn process_group(&self, pgid: i32) -> ProcessSample {
        self.sample(|s| s.in_group(pgid))
    }

    /// CPU and RSS of `root` and its live descendants.
    pub fn process_tree(&self, root: i32) -> ProcessSample {
        let members = tree_members(&self.stats, root);
        self.sample(|s| members.binary_search(&s.pid).is_ok())
    }

    /// Sums the members' CPU and memory from the scan's `stat` lines (reading each member's
    /// `statm` as well nearly doubled the files a pass reads: one per instance process); only a
    /// group of several reads their `smaps_rollup` too.
    fn sample(&self, is_member: impl Fn(&ProcStat) -> bool) -> ProcessSample {
        let mut sample = ProcessSample::default();
        let (mut ticks, mut pages) = (0u64, 0u64);
        for s in self.stats.iter().filter(|s| is_member(s)) {
            sample.pids.push(s.pid);
            ticks = ticks.saturating_add(s.cpu_ticks());
            pages = pages.saturating_add(s.rss_pages);
        }
        sample.cpu_micros = ticks_to_micros(ticks, self.ticks_per_second);
        sample.rss_bytes = match sample.pids.len() {
            0 | 1 => None,
            _ => self.summed_pss(&sample.pids),
        }
        .unwrap_or_else(|| pages.saturating_mul(self.page_size));
        sample
    }

    /// The members' PSS summed; `None` when one of them cannot be read (gone, or a kernel
    /// without `smaps_rollup`).
    fn summed_pss(&self, pids: &[i32]) -> Option<u64> {
        pids.iter().try_fold(0u64, |sum, pid| {
            let path = self.root.join(pid.to_string()).join("smaps_rollup");
            let pss = parse_smaps_rollup_pss(&std::fs::read_to_string(path).ok()?)?;
            Some(sum.saturating_add(pss))
        })
    }
}

fn sysconf_value(var: SysconfVar, what: &'static str) -> Result<u64, SampleError> {
    match sysconf(var) {
        Ok(Some(value)) if value > 0 => Ok(value.unsigned_abs()),
        Ok(_) => Err(SampleError::Sysconf {
            what,
            source: nix::errno::Errno::EINVAL,
        }),
        Err(source) => Err(SampleError::Sysconf { what, source }),
    }
}

/// Usage of a cgroup v2 at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupSample {
    /// Cumulative CPU time of everything ever in the cgroup, microseconds (`cpu.stat`).
    pub cpu_micros: u64,
    /// Memory charged now, bytes (`memory.current`; includes page cache).
    pub memory_bytes: u64,
}

/// Reads `cpu.stat` and `memory.current` of the cgroup v2 directory `dir`
/// (e.g. `/sys/fs/cgroup/nimbus/INSTANCE`).
pub fn read_cgroup_v2(dir: &Path) -> Result<CgroupSample, SampleError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(|text| (text, path.clone()))
            .map_err(|source| SampleError::Io { path, source })
    };
    let (cpu_stat, cpu_path) = read("cpu.stat")?;
    let (memory, memory_path) = read("memory.current")?;
    Ok(CgroupSample {
        cpu_micros: parse_cpu_stat_usage_usec(&cpu_stat).ok_or(SampleError::Parse {
            path: cpu_path,
            what: "no usage_usec line",
        })?,
        memory_bytes: parse_memory_current(&memory).ok_or(SampleError::Parse {
            path: memory_path,
            what: "not a byte count",
        })?,
    })
}
