//! Process and runtime gauges, read at scrape time: resident memory, open file descriptors, CPU seconds, start
//! time and threads from `/proc/self`, the tokio runtime's workers and alive tasks, and the server's jobs on the
//! blocking pool (waiting and running, counted by `crate::blocking`).

use opentelemetry::metrics::Meter;

/// Registers the observable instruments; their callbacks run at each scrape.
pub fn observe(meter: &Meter) {
    let runtime = tokio::runtime::Handle::try_current().ok();
    meter
        .u64_observable_gauge("process_resident_memory")
        .with_unit("By")
        .with_description("Resident memory of the process")
        .with_callback(|o| {
            if let Some(status) = read_status() {
                o.observe(status.rss_bytes, &[]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("process_open_fds")
        .with_description("Open file descriptors")
        .with_callback(|o| {
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                o.observe(dir.count() as u64, &[]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("process_threads")
        .with_description("Threads of the process")
        .with_callback(|o| {
            if let Some(status) = read_status() {
                o.observe(status.threads, &[]);
            }
        })
        .build();
    meter
        .f64_observable_counter("process_cpu")
        .with_unit("s")
        .with_description("CPU time used by the process (user and system)")
        .with_callback(|o| {
            if let Some(seconds) = cpu_seconds() {
                o.observe(seconds, &[]);
            }
        })
        .build();
    let start = start_time();
    meter
        .f64_observable_gauge("process_start_time")
        .with_unit("s")
        .with_description("Start time of the process, in seconds since the Unix epoch")
        .with_callback(move |o| o.observe(start, &[]))
        .build();
    if let Some(handle) = runtime {
        let workers = handle.clone();
        meter
            .u64_observable_gauge("tokio_workers")
            .with_description("Worker threads of the async runtime")
            .with_callback(move |o| o.observe(workers.metrics().num_workers() as u64, &[]))
            .build();
        meter
            .u64_observable_gauge("tokio_alive_tasks")
            .with_description("Tasks alive in the async runtime")
            .with_callback(move |o| o.observe(handle.metrics().num_alive_tasks() as u64, &[]))
            .build();
    }
    meter
        .u64_observable_gauge("ociregistry_blocking_queue_depth")
        .with_description(
            "The server's jobs (index, file reads) waiting for a thread of the blocking pool",
        )
        .with_callback(|o| o.observe(crate::blocking::waiting(), &[]))
        .build();
    meter
        .u64_observable_gauge("ociregistry_blocking_jobs_running")
        .with_description("The server's jobs running on the blocking pool")
        .with_callback(|o| o.observe(crate::blocking::running(), &[]))
        .build();
}

struct Status {
    rss_bytes: u64,
    threads: u64,
}

fn read_status() -> Option<Status> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Status {
        rss_bytes: field("VmRSS:")? * 1024,
        threads: field("Threads:")?,
    })
}

/// Clock ticks per second for `/proc` times.
fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields of `/proc/self/stat` after the command name.
fn stat_fields() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = text.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

fn cpu_seconds() -> Option<f64> {
    let f = stat_fields()?;
    // utime and stime are fields 14 and 15 of stat; `f` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks())
}

fn start_time() -> f64 {
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let started = stat_fields().and_then(|f| f.get(19)?.parse::<f64>().ok());
    match (boot, started) {
        (Some(boot), Some(started)) => boot + started / ticks(),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    }
}
