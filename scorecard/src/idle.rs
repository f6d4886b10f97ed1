//! Cost at rest: CPU and resident memory of tunnel processes whose tunnels are up (pool warm,
//! handshakes done, keepalives running) while nothing is sent. The scorecard rests once at the
//! end of every round ([`measure`]) and [`combine`]s the windows, so the figures carry a spread
//! over the rounds like the loaded ones: one window would see one state of each process (its
//! RSS would not move at all), while two runs of the same build differ by a few per cent.

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
    /// over the windows.
    pub cpu_s_per_min: Spread,
    /// Resident set (`VmRSS`) at the end of each window, bytes.
    pub rss_bytes: Spread,
}

/// One backend's processes at rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Idle {
    /// All measured windows together, seconds.
    pub window_s: f64,
    /// How many windows were measured (one at the end of each round); the spread is over them.
    pub slices: u32,
    /// CPU seconds per minute of the tunnel processes together.
    pub tunnel_cpu_s_per_min: Spread,
    /// Resident set of the tunnel processes together, bytes.
    pub tunnel_rss_bytes: Spread,
    /// Each process.
    pub processes: Vec<IdleProcess>,
}

/// Watch every group of processes over one `window` while the caller sends nothing; one
/// [`Idle`] per group, in order, each with a single reading (no spread yet: see [`combine`]).
pub async fn measure(groups: &[Vec<Process>], window: Duration) -> Result<Vec<Idle>, String> {
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
    let before = read()?;
    tokio::time::sleep_until((started + window).into()).await;
    let after = read()?;
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    // Per process: CPU-s per minute and RSS.
    let figures: Vec<(f64, f64)> = after
        .iter()
        .zip(&before)
        .map(|((c1, r1), (c0, _))| {
            (
                c1.saturating_sub(*c0).as_secs_f64() * 60.0 / wall,
                *r1 as f64,
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    for group in groups {
        let idx: Vec<usize> = (i..i + group.len()).collect();
        i += group.len();
        let tunnel = || idx.iter().copied().filter(|&j| all[j].role == Role::Tunnel);
        out.push(Idle {
            window_s: wall,
            slices: 1,
            tunnel_cpu_s_per_min: Spread::single(tunnel().map(|j| figures[j].0).sum()),
            tunnel_rss_bytes: Spread::single(tunnel().map(|j| figures[j].1).sum()),
            processes: idx
                .iter()
                .map(|&j| IdleProcess {
                    name: all[j].name.clone(),
                    role: all[j].role,
                    cpu_s_per_min: Spread::single(figures[j].0),
                    rss_bytes: Spread::single(figures[j].1),
                })
                .collect(),
        });
    }
    Ok(out)
}

/// Put the windows of several rounds together: `rounds[r][g]` is group `g` in round `r` (as
/// [`measure`] returned it; every round the same groups and processes). Each figure becomes
/// the spread of the rounds' medians; `window_s` adds up, `slices` counts the windows.
/// Nothing (an empty list) when there were no rounds.
pub fn combine(rounds: &[Vec<Idle>]) -> Vec<Idle> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    let over = |f: &dyn Fn(&Idle) -> f64, g: usize| -> Spread {
        let v: Vec<f64> = rounds.iter().filter_map(|r| r.get(g)).map(f).collect();
        Spread::of(&v).unwrap_or(Spread::single(0.0))
    };
    first
        .iter()
        .enumerate()
        .map(|(g, idle)| Idle {
            window_s: rounds
                .iter()
                .filter_map(|r| r.get(g))
                .map(|i| i.window_s)
                .sum(),
            slices: rounds
                .iter()
                .filter_map(|r| r.get(g))
                .map(|i| i.slices)
                .sum(),
            tunnel_cpu_s_per_min: over(&|i| i.tunnel_cpu_s_per_min.median, g),
            tunnel_rss_bytes: over(&|i| i.tunnel_rss_bytes.median, g),
            processes: idle
                .processes
                .iter()
                .enumerate()
                .map(|(p, proc_)| {
                    let pick = |f: fn(&IdleProcess) -> f64| {
                        over(&|i: &Idle| i.processes.get(p).map_or(f64::NAN, f), g)
                    };
                    IdleProcess {
                        name: proc_.name.clone(),
                        role: proc_.role,
                        cpu_s_per_min: pick(|x| x.cpu_s_per_min.median),
                        rss_bytes: pick(|x| x.rss_bytes.median),
                    }
                })
                .collect(),
        })
        .collect()
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
        let mut rounds = Vec::new();
        for _ in 0..3 {
            rounds.push(measure(&groups, Duration::from_millis(200)).await.unwrap());
        }
        let idle = combine(&rounds);
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

    /// Three rounds' single readings become one spread per figure, per group and process;
    /// windows add up; no rounds, no groups.
    #[test]
    fn combine_spreads_over_rounds() {
        let round = |cpu: f64, rss: f64| {
            vec![Idle {
                window_s: 5.0,
                slices: 1,
                tunnel_cpu_s_per_min: Spread::single(cpu),
                tunnel_rss_bytes: Spread::single(rss),
                processes: vec![IdleProcess {
                    name: "node".into(),
                    role: Role::Tunnel,
                    cpu_s_per_min: Spread::single(cpu),
                    rss_bytes: Spread::single(rss),
                }],
            }]
        };
        let c = combine(&[round(0.3, 30.0), round(0.1, 34.0), round(0.2, 31.0)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].slices, 3);
        assert_eq!(c[0].window_s, 15.0);
        let want_cpu = Spread {
            median: 0.2,
            min: 0.1,
            max: 0.3,
        };
        let want_rss = Spread {
            median: 31.0,
            min: 30.0,
            max: 34.0,
        };
        assert_eq!(c[0].tunnel_cpu_s_per_min, want_cpu);
        assert_eq!(c[0].tunnel_rss_bytes, want_rss);
        assert_eq!(c[0].processes[0].cpu_s_per_min, want_cpu);
        assert_eq!(c[0].processes[0].rss_bytes, want_rss);
        assert!(combine(&[]).is_empty());
    }
}
