//! Server resource use from `/proc`: resident memory and CPU time (user +
//! system) of a process and all its descendants (nginx workers, Pushpin's
//! services), so CPU per delivery can be compared across servers.

use std::collections::HashMap;

/// `/proc/PID/stat` times are in USER_HZ, which Linux fixes at 100.
const TICKS_PER_SECOND: f64 = 100.0;

/// One sample of a process tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident memory summed over the tree, KiB.
    pub rss_kib: u64,
    /// User + system CPU time summed over the tree (with waited-for
    /// children), seconds.
    pub cpu_seconds: f64,
    /// Processes in the tree.
    pub processes: usize,
}

/// The pid and its descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, _)) = stat_fields(pid) {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|&(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// (ppid, CPU ticks) from `/proc/PID/stat`: utime + stime, plus cutime +
/// cstime (the time of children it waited for), so a service that exits and
/// is restarted within a window does not make the tree's total go down.
fn stat_fields(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15,
    // cutime 16, cstime 17.
    let ppid = fields.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some((ppid, ticks))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the tree rooted at `root` (the tree is walked again each time, so
/// workers started late are counted).
pub fn sample(root: u32) -> Sample {
    let mut s = Sample::default();
    for pid in tree(root) {
        if let Some((_, ticks)) = stat_fields(pid) {
            s.cpu_seconds += ticks as f64 / TICKS_PER_SECOND;
            s.rss_kib += rss_kib(pid).unwrap_or(0);
            s.processes += 1;
        }
    }
    s
}
