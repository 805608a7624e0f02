//! The report: the header, the Markdown tables, percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::load::Phase;
use crate::options::{Options, Proto, Target};

pub fn print_header(options: &Options) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# warmpool webhook load benchmark");
    println!();
    println!("- server: `{}`", options.server.display());
    println!(
        "- machine: {cpus} CPUs, {model}; load average at start: {}",
        load.trim()
    );
    println!(
        "- protocol: {}, keep-alive, one request in flight per connection; load generator on {} \
         thread(s); warm-up {:.1} s, measure {:.1} s per phase, {} round(s){}",
        match options.proto {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        },
        options.client_threads,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
        options.rounds,
        if options.smoke { " (smoke run)" } else { "" },
    );
    println!();
}

pub struct Report<'a> {
    pub results: &'a BTreeMap<(usize, Target), Vec<Phase>>,
    pub cold: &'a [(&'static str, usize, Phase)],
    pub startups: &'a [Duration],
    pub idle_start_kib: u64,
    pub idle_after_kib: u64,
    pub hwm_kib: u64,
    pub binary_bytes: u64,
    pub exited_cleanly: bool,
}

impl Report<'_> {
    pub fn print(&self, options: &Options) {
        println!("## Throughput and latency");
        println!();
        println!(
            "Requests/s over all rounds (min–max of the rounds in brackets); latency percentiles \
             over every request of every round; CPU time of the server and of the load generator \
             per request; the server's peak RSS during the phase in the first round."
        );
        println!();
        println!(
            "| clients | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req | server CPU / ceiling's | client CPU µs/req | peak RSS MiB | mutate/ceiling |"
        );
        println!(
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for &clients in &options.concurrency {
            let ceiling = self.rate(clients, Target::Healthz).0;
            let ceiling_cpu = self.server_cpu_per_request(clients, Target::Healthz);
            for target in Target::EVERY {
                let Some(phases) = self.results.get(&(clients, target)) else {
                    continue;
                };
                let (rate, min, max) = self.rate(clients, target);
                let latencies = self.latencies(clients, target);
                let errors: u64 = phases.iter().map(|p| p.errors).sum();
                let reconnects: u64 = phases.iter().map(|p| p.reconnects).sum();
                let requests: u64 = phases.iter().map(|p| p.requests).sum::<u64>().max(1);
                let per_request = |cpu: fn(&Phase) -> Duration| {
                    let total: Duration = phases.iter().map(cpu).sum();
                    total.as_secs_f64() * 1e6 / requests as f64
                };
                let server_cpu = per_request(|p| p.server_cpu);
                // Issue 15's measure of what a review costs beyond the transport and routing.
                let cpu_ratio = match (target, ceiling_cpu) {
                    (Target::Healthz, _) => "—".to_owned(),
                    (_, Some(c)) if c > 0.0 => format!("{:.2}", server_cpu / c),
                    _ => "?".to_owned(),
                };
                // The first round's: later rounds start with what earlier phases left behind.
                let peak = phases.first().map_or(0, |p| p.peak_rss_kib);
                let ratio = match target {
                    Target::Healthz => "—".to_owned(),
                    _ if ceiling > 0.0 => format!("{:.2}", rate / ceiling),
                    _ => "?".to_owned(),
                };
                let spread = if phases.len() > 1 {
                    format!(" ({min:.0}–{max:.0})")
                } else {
                    String::new()
                };
                let reconnects = if reconnects > 0 {
                    format!(" ({reconnects} reconnects)")
                } else {
                    String::new()
                };
                println!(
                    "| {clients} | {} | {rate:.0}{spread} | {} | {} | {} | {errors}{reconnects} | {server_cpu:.1} | {cpu_ratio} | {:.1} | {} | {ratio} |",
                    target.label(),
                    ms(percentile(&latencies, 0.50)),
                    ms(percentile(&latencies, 0.99)),
                    ms(percentile(&latencies, 0.999)),
                    per_request(|p| p.client_cpu),
                    mib(peak),
                );
            }
        }
        println!();
        let both = options.targets.contains(&Target::MutateSmall)
            && options.targets.contains(&Target::MutateLarge);
        if both {
            println!("## Large pod vs small pod (latency ratio)");
            println!();
            println!("| clients | p50 large/small | p99 large/small |");
            println!("| ---: | ---: | ---: |");
            for &clients in &options.concurrency {
                let quantile =
                    |target, q| percentile(&self.latencies(clients, target), q).max(1) as f64;
                println!(
                    "| {clients} | {:.2} | {:.2} |",
                    quantile(Target::MutateLarge, 0.5) / quantile(Target::MutateSmall, 0.5),
                    quantile(Target::MutateLarge, 0.99) / quantile(Target::MutateSmall, 0.99),
                );
            }
            println!();
        }
        println!("## A new connection per request (POST /mutate small)");
        println!();
        println!("| connection | clients | req/s | p50 ms | p99 ms | errors | server CPU µs/req |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (how, clients, phase) in self.cold {
            let requests = phase.requests.max(1) as f64;
            println!(
                "| {how} | {clients} | {:.0} | {} | {} | {} | {:.0} |",
                phase.requests as f64 / phase.elapsed.as_secs_f64(),
                ms(percentile(&phase.latencies, 0.50)),
                ms(percentile(&phase.latencies, 0.99)),
                phase.errors,
                phase.server_cpu.as_secs_f64() * 1e6 / requests,
            );
        }
        println!();
        println!("## Server process");
        println!();
        let median = self.startups.get(self.startups.len() / 2).copied();
        let max = self.startups.last().copied();
        println!(
            "- start-up, exec to `GET /readyz` 200 over TLS: median {} ms, max {} ms ({} runs)",
            median.map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            max.map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            self.startups.len()
        );
        println!(
            "- RSS idle after start: {} MiB; idle after the load: {} MiB; peak (VmHWM): {} MiB",
            mib(self.idle_start_kib),
            mib(self.idle_after_kib),
            mib(self.hwm_kib)
        );
        println!(
            "- binary: {:.1} MiB ({} bytes)",
            self.binary_bytes as f64 / 1048576.0,
            self.binary_bytes
        );
        println!(
            "- SIGTERM: {}",
            if self.exited_cleanly {
                "drained and exited 0"
            } else {
                "did NOT exit 0"
            }
        );
    }

    /// Every latency of every round, sorted.
    pub fn latencies(&self, clients: usize, target: Target) -> Vec<u32> {
        let mut latencies: Vec<u32> = self
            .results
            .get(&(clients, target))
            .into_iter()
            .flatten()
            .flat_map(|p| p.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// Requests/s over all rounds, and the slowest and fastest round.
    /// The server's CPU time (user + system) per request over every round of a phase.
    pub fn server_cpu_per_request(&self, clients: usize, target: Target) -> Option<f64> {
        let phases = self.results.get(&(clients, target))?;
        let requests: u64 = phases.iter().map(|p| p.requests).sum();
        let cpu: Duration = phases.iter().map(|p| p.server_cpu).sum();
        (requests > 0).then(|| cpu.as_secs_f64() * 1e6 / requests as f64)
    }

    pub fn rate(&self, clients: usize, target: Target) -> (f64, f64, f64) {
        let Some(phases) = self.results.get(&(clients, target)) else {
            return (0.0, 0.0, 0.0);
        };
        let rates: Vec<f64> = phases
            .iter()
            .map(|p| p.requests as f64 / p.elapsed.as_secs_f64().max(1e-9))
            .collect();
        let requests: u64 = phases.iter().map(|p| p.requests).sum();
        let seconds: f64 = phases.iter().map(|p| p.elapsed.as_secs_f64()).sum();
        (
            requests as f64 / seconds.max(1e-9),
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        )
    }
}

pub fn ms(micros: u32) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The `q` quantile of sorted latencies (nearest rank).
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
