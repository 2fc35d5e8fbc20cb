//! CPU time per message, of the client and of the broker: on a machine where
//! both share the same cores, every microsecond the worker spends is one the
//! broker does not get, so this is what explains a drain rate.

/// Linux reports `utime`/`stime` in clock ticks of `USER_HZ`, which is 100
/// on every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of process `pid` (threads that exited included).
#[must_use]
pub fn seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces or parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The local RabbitMQ (`beam.smp`), if it runs on this machine and is visible.
#[must_use]
pub fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
        })
}

/// CPU seconds of a set of processes, read at the start and the end of a run.
#[derive(Debug, Clone)]
pub struct Meter {
    pids: Vec<u32>,
    start: Option<f64>,
}

fn total(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| seconds(*p)).sum()
}

impl Meter {
    /// Starts counting for `pids`.
    #[must_use]
    pub fn start(pids: Vec<u32>) -> Self {
        let start = total(&pids);
        Self { pids, start }
    }

    /// Microseconds of CPU per message since [`Meter::start`], over `n` messages.
    #[must_use]
    pub fn per_message_us(&self, n: u64) -> Option<f64> {
        let spent = total(&self.pids)? - self.start?;
        #[allow(clippy::cast_precision_loss)]
        let n = n.max(1) as f64;
        Some(spent * 1e6 / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(seconds(std::process::id()).is_some());
    }
}
