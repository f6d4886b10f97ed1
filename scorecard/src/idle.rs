//! Cost at rest: CPU and resident memory of tunnel processes whose tunnels are up (pool warm,
//! handshakes done, keepalives running) while nothing is sent. The window is cut into slices
//! so the figures carry a spread like the loaded ones.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::procfs;
use super::{Process, Role, Spread};

/// One process at rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleProcess {
    /// Name from [`Process`].
    pub name: String,
    /// Its role.
    pub role: Role,
    /// CPU seconds (on-CPU time of its threads, from `schedstat`) per minute of wall time,
    /// over the slices.
    pub cpu_s_per_min: Spread,
    /// Resident set (`VmRSS`) at the end of each slice, bytes.
    pub rss_bytes: Spread,
}

/// One backend's processes at rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Idle {
    /// The whole measured window, seconds.
    pub window_s: f64,
    /// How many slices the window was cut into (the spread is over them).
    pub slices: u32,
    /// CPU seconds per minute of the tunnel processes together.
    pub tunnel_cpu_s_per_min: Spread,
    /// Resident set of the tunnel processes together, bytes.
    pub tunnel_rss_bytes: Spread,
    /// Each process.
    pub processes: Vec<IdleProcess>,
}

/// Watch every group of processes over the same `window`, cut into `slices`, while the caller
/// sends nothing; one [`Idle`] per group, in order.
pub async fn measure(
    groups: &[Vec<Process>],
    window: Duration,
    slices: u32,
) -> Result<Vec<Idle>, String> {
    let slices = slices.max(1);
    let all: Vec<&Process> = groups.iter().flatten().collect();
    // On-CPU time from the scheduler's nanosecond counters: an idle tunnel uses a few
    // milliseconds a minute, below the 10 ms clock tick of /proc/<pid>/stat.
    let read = || -> Result<Vec<(Duration, u64)>, String> {
        all.iter()
            .map(|p| {
                let cpu = procfs::run_time(p.pid).map_err(|e| format!("{}: {e}", p.name))?;
                let rss = procfs::rss(p.pid).map_err(|e| format!("{}: {e}", p.name))?;
                Ok((cpu, rss))
            })
            .collect()
    };
    let started = Instant::now();
    let mut last = read()?;
    let mut at = Instant::now();
    // Per process: CPU-s per minute and RSS, one entry per slice.
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    for k in 1..=slices {
        tokio::time::sleep_until((started + window * k / slices).into()).await;
        let now = read()?;
        let wall = at.elapsed().as_secs_f64().max(1e-9);
        at = Instant::now();
        for (i, ((c1, r1), (c0, _))) in now.iter().zip(&last).enumerate() {
            cpu[i].push(c1.saturating_sub(*c0).as_secs_f64() * 60.0 / wall);
            rss[i].push(*r1 as f64);
        }
        last = now;
    }
    let mut out = Vec::new();
    let mut i = 0;
    for group in groups {
        let idx: Vec<usize> = (i..i + group.len()).collect();
        i += group.len();
        let tunnel: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&j| all[j].role == Role::Tunnel)
            .collect();
        let sum = |series: &[Vec<f64>]| -> Vec<f64> {
            (0..slices as usize)
                .map(|s| tunnel.iter().map(|&j| series[j][s]).sum())
                .collect()
        };
        let spread = |v: &[f64]| Spread::of(v).unwrap_or(Spread::single(0.0));
        out.push(Idle {
            window_s: started.elapsed().as_secs_f64(),
            slices,
            tunnel_cpu_s_per_min: spread(&sum(&cpu)),
            tunnel_rss_bytes: spread(&sum(&rss)),
            processes: idx
                .iter()
                .map(|&j| IdleProcess {
                    name: all[j].name.clone(),
                    role: all[j].role,
                    cpu_s_per_min: spread(&cpu[j]),
                    rss_bytes: spread(&rss[j]),
                })
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::procfs::Pid;

    /// A thread spinning through the window is charged about a core (60 CPU-s per minute);
    /// the same process as a second group reads the same figures; RSS is the process's.
    #[tokio::test]
    async fn busy_process_is_charged_and_groups_are_kept_apart() {
        let stop = Arc::new(AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        };
        let me = |role| Process {
            name: "me".into(),
            pid: Pid::Current,
            role,
        };
        let groups = vec![vec![me(Role::Tunnel)], vec![me(Role::App)]];
        let idle = measure(&groups, Duration::from_millis(600), 3)
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        spin.join().unwrap();
        assert_eq!(idle.len(), 2);
        let busy = &idle[0];
        assert_eq!(busy.slices, 3);
        assert!(busy.window_s >= 0.6);
        // One spinning thread on a shared 2-core machine gets well over a tenth of a core.
        assert!(busy.tunnel_cpu_s_per_min.median > 6.0, "{busy:?}");
        assert!(busy.tunnel_cpu_s_per_min.max <= 60.0 * 4.0, "{busy:?}");
        assert!(busy.tunnel_rss_bytes.min > 0.0);
        assert_eq!(busy.processes[0].cpu_s_per_min, busy.tunnel_cpu_s_per_min);
        // The second group has no tunnel process: its tunnel totals are zero, its process's
        // own figures are not.
        assert_eq!(idle[1].tunnel_cpu_s_per_min, Spread::single(0.0));
        assert!(idle[1].processes[0].cpu_s_per_min.median > 6.0);
    }
}
