//! CPU time a process and its children spent, from `/proc`: what a proxy costs per
//! request, split into its own code (user) and the kernel's work on its behalf
//! (system calls, and the loopback TCP stack that runs in the sender's system call).

use std::time::Duration;

/// User and kernel CPU time so far of `pid` and every process whose parent it is
/// (nginx's workers).
pub fn used(pid: u32) -> (Duration, Duration) {
    let tick = Duration::from_secs(1) / clock_ticks_per_second();
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if stat(child).is_some_and(|f| f.ppid == pid) {
                pids.push(child);
            }
        }
    }
    let (mut user, mut kernel) = (0u64, 0u64);
    for p in pids {
        if let Some(f) = stat(p) {
            user += f.utime;
            kernel += f.stime;
        }
    }
    (tick * user as u32, tick * kernel as u32)
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

/// Fields 4 (ppid), 14 (utime) and 15 (stime) of /proc/PID/stat, read after the
/// command name (which may hold spaces and parentheses).
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")" come field 3 (state) onwards: ppid is f[1], utime f[11], stime f[12].
    Some(Stat { ppid: f.get(1)?.parse().ok()?, utime: f.get(11)?.parse().ok()?, stime: f.get(12)?.parse().ok()? })
}

/// USER_HZ, the unit of /proc's times: `getconf CLK_TCK`, 100 when that cannot say.
fn clock_ticks_per_second() -> u32 {
    static HZ: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_spends_user_time_when_it_computes() {
        let before = used(std::process::id());
        let mut x = 0u64;
        let start = std::time::Instant::now();
        // Bounded: at most 2 s of arithmetic, to get well past one clock tick.
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = used(std::process::id());
        assert!(after.0 > before.0, "user time grew: {before:?} → {after:?}");
        assert!(stat(std::process::id()).is_some_and(|s| s.ppid > 0));
    }
}
