//! CPU time and peak memory of whole processes, read from `/proc` (Linux).
//!
//! `/proc/<pid>/stat` holds the user and system time of every thread of a process, in clock
//! ticks (`/proc/<pid>/task/<tid>/schedstat` the same in nanoseconds, per live thread);
//! `/proc/<pid>/status` holds `VmHWM` (peak resident set), which writing `5` to
//! `/proc/<pid>/clear_refs` resets so each workload window gets its own peak.

use std::fs;
use std::io;
use std::time::Duration;

/// Which process to read: this one or a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The calling process.
    Current,
    /// Another process by its ID.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Current => "/proc/self".into(),
            Pid::Other(p) => format!("/proc/{p}"),
        }
    }
}

/// One reading of a process's cumulative CPU time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User-mode time of all threads so far.
    pub user: Duration,
    /// Kernel-mode time of all threads so far.
    pub system: Duration,
}

impl CpuTimes {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The CPU used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// The kernel's clock tick rate (`AT_CLKTCK` from the auxiliary vector; 100 on every common
/// Linux build, used when the vector cannot be read).
pub fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    if let Ok(auxv) = fs::read("/proc/self/auxv") {
        for pair in auxv.chunks_exact(16) {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap_or([0; 8]));
            let val = u64::from_ne_bytes(pair[8..].try_into().unwrap_or([0; 8]));
            if key == AT_CLKTCK && val > 0 {
                return val;
            }
        }
    }
    100
}

/// Cumulative user and system time of all threads of `pid`.
pub fn cpu_times(pid: Pid) -> io::Result<CpuTimes> {
    let stat = fs::read_to_string(format!("{}/stat", pid.dir()))?;
    parse_stat(&stat, clock_ticks_per_second())
}

/// Parse `/proc/<pid>/stat`: fields 14 and 15 (utime, stime) counted after the command name,
/// which sits in parentheses and may itself contain spaces and parentheses.
pub fn parse_stat(stat: &str, ticks_per_second: u64) -> io::Result<CpuTimes> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/<pid>/stat format",
        )
    };
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    // After ") " come field 3 (state) onwards; utime is field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<Duration> {
        let t: u64 = fields.get(i).ok_or_else(bad)?.parse().map_err(|_| bad())?;
        Ok(Duration::from_nanos(
            t.saturating_mul(1_000_000_000) / ticks_per_second.max(1),
        ))
    };
    Ok(CpuTimes {
        user: tick(14 - 3)?,
        system: tick(15 - 3)?,
    })
}

/// Time every current thread of `pid` has spent on a CPU (user and kernel), summed from the
/// first field of `/proc/<pid>/task/<tid>/schedstat`, which the scheduler keeps in
/// nanoseconds. Finer than [`cpu_times`] (clock ticks, 10 ms), so it can tell apart processes
/// that are nearly idle; threads that have exited are not counted, so use it over windows in
/// which the process starts and stops no threads.
pub fn run_time(pid: Pid) -> io::Result<Duration> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("{}/task", pid.dir()))? {
        let path = task?.path().join("schedstat");
        // A thread that exits between the listing and the read is simply not counted.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        total += parse_schedstat(&text)?;
    }
    Ok(Duration::from_nanos(total))
}

/// The on-CPU nanoseconds (first field) of a `schedstat` line.
pub fn parse_schedstat(text: &str) -> io::Result<u64> {
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected schedstat format"))
}

/// Peak resident set size (`VmHWM`) of `pid` in bytes since start or the last
/// [`reset_peak_rss`].
pub fn peak_rss(pid: Pid) -> io::Result<u64> {
    let status = fs::read_to_string(format!("{}/status", pid.dir()))?;
    parse_status_kib(&status, "VmHWM:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmHWM in status"))
}

/// Current resident set size (`VmRSS`) of `pid` in bytes.
pub fn rss(pid: Pid) -> io::Result<u64> {
    let status = fs::read_to_string(format!("{}/status", pid.dir()))?;
    parse_status_kib(&status, "VmRSS:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in status"))
}

/// Resident pages of `pid` backed by files (`RssFile`: the binary's and libraries' pages,
/// shared by every process that maps them), bytes. `VmRSS` counts them in full for each process.
pub fn rss_file(pid: Pid) -> io::Result<u64> {
    let status = fs::read_to_string(format!("{}/status", pid.dir()))?;
    parse_status_kib(&status, "RssFile:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no RssFile in status"))
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Reset the peak RSS of `pid` to its current RSS (`echo 5 > /proc/<pid>/clear_refs`).
pub fn reset_peak_rss(pid: Pid) -> io::Result<()> {
    fs::write(format!("{}/clear_refs", pid.dir()), b"5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a ')' must not shift the fields.
        let line = "1234 (we ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        let t = parse_stat(line, 100).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(750));
        assert!(parse_stat("garbage", 100).is_err());
        assert!(parse_stat("1 (x) S 1", 100).is_err());
    }

    #[test]
    fn schedstat_counts_nanoseconds_of_every_thread() {
        assert_eq!(
            parse_schedstat("263498344 185289568 867\n").unwrap(),
            263_498_344
        );
        assert!(parse_schedstat("").is_err());
        let before = run_time(Pid::Current).unwrap();
        // Work on another thread of this process is counted too.
        std::thread::spawn(|| {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
        .join()
        .unwrap();
        // The spinning thread has exited: only this thread's own time is left, which grew.
        let after = run_time(Pid::Current).unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
    }

    #[test]
    fn own_process_is_readable_and_cpu_grows_with_work() {
        let before = cpu_times(Pid::Current).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = cpu_times(Pid::Current).unwrap().since(&before).total();
        assert!(used >= Duration::from_millis(100), "{used:?}");
        assert!(peak_rss(Pid::Current).unwrap() >= rss(Pid::Current).unwrap() / 2);
        reset_peak_rss(Pid::Current).unwrap();
    }
}
