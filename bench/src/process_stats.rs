//! What the kernel says about a process: CPU time used and peak resident memory.

use std::time::Duration;

/// A reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessReading {
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
    /// Peak resident set size since the process started (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// Reads process `pid`; `None` when it is gone or `/proc` cannot be read.
pub fn read(pid: u32) -> Option<ProcessReading> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let ticks = procfs::ticks_per_second();
    let cpu_ticks = stat.utime + stat.stime;
    let cpu = Duration::from_secs_f64(cpu_ticks as f64 / ticks as f64);
    let status = process.status().ok()?;
    let peak_rss_bytes = status.vmhwm.unwrap_or(0) * 1024;
    Some(ProcessReading {
        cpu,
        peak_rss_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        // Touch some memory and CPU so both readings are above zero.
        let data: Vec<u64> = (0..1_000_000).collect();
        let sum: u64 = data.iter().sum();
        assert!(sum > 0);
        let reading = read(std::process::id()).expect("this process is readable");
        assert!(reading.peak_rss_bytes > 8 * 1024 * 1024, "{reading:?}");
    }

    #[test]
    fn a_process_that_does_not_exist_reads_as_none() {
        assert_eq!(read(u32::MAX), None);
    }
}
