//! `davsync-sim`: run many seeded scenarios, or replay one with its trace.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use davsync_sim::{Config, Engine, Engines, Profile, TraceMode, run_seed};

#[derive(Parser)]
#[command(name = "davsync-sim", about = "Deterministic multi-instance simulator for davsync")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every seed of a range and reports throughput and failures.
    Run {
        /// Seeds to run, `start..end` (end excluded).
        #[arg(long, default_value = "0..1000")]
        seeds: String,
        /// Parallel workers (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
    /// Runs one seed and prints its readable trace.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
}

#[derive(Args, Clone)]
struct ScenarioArgs {
    /// Virtual instances.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Which engine runs the algorithm.
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    engine: Engine,
    /// Which server the remote plays (mixed: chosen per seed).
    #[arg(long, value_enum, default_value_t = Profile::Mixed)]
    profile: Profile,
    /// Scheduler steps before quiescence.
    #[arg(long, default_value_t = Config::default().steps)]
    steps: u32,
    /// Clock jumps only go forwards (the workload before backward jumps were
    /// added; replays seeds recorded then).
    #[arg(long)]
    forward_jumps_only: bool,
    /// No process freezes (the workload before freezes were added; replays
    /// seeds recorded then).
    #[arg(long)]
    no_freezes: bool,
    /// A maintenance job runs remote gc among the syncs (issue 9).
    #[arg(long)]
    gc: bool,
    /// Edits spread evenly over all files (the workload before hot files
    /// were added; replays seeds recorded then).
    #[arg(long)]
    no_hot_files: bool,
    /// One remote operation per scheduler step (the workload before bursts
    /// were added; replays seeds recorded then).
    #[arg(long)]
    no_bursts: bool,
}

impl ScenarioArgs {
    fn config(&self) -> Config {
        Config {
            instances: self.instances.max(1),
            profile: self.profile,
            steps: self.steps,
            backward_jumps: !self.forward_jumps_only,
            freezes: !self.no_freezes,
            gc: self.gc,
            gc_grace_ms: None,
            hot_files: !self.no_hot_files,
            bursts: !self.no_bursts,
        }
    }

    fn replay_command(&self, seed: u64) -> String {
        format!(
            "davsync-sim replay --seed {seed} --instances {} --engine {} --profile {} --steps {}{}{}",
            self.instances,
            value_name(&self.engine),
            value_name(&self.profile),
            self.steps,
            if self.forward_jumps_only { " --forward-jumps-only" } else { "" },
            if self.no_freezes { " --no-freezes" } else { "" }
        ) + if self.gc { " --gc" } else { "" }
            + if self.no_hot_files { " --no-hot-files" } else { "" }
            + if self.no_bursts { " --no-bursts" } else { "" }
    }
}

fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_owned()).unwrap_or_default()
}

/// Rust's allocations go to mimalloc, and so do SQLite's: its `override`
/// feature replaces malloc/free in this binary (see `Cargo.toml`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run_cli() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("davsync-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_cli() -> Result<bool> {
    match Cli::parse().command {
        Command::Run { seeds, jobs, scenario } => run_many(&seeds, jobs, &scenario),
        Command::Replay { seed, scenario } => {
            let mut engines = Engines::new(scenario.engine);
            let outcome = run_seed(&mut engines, &scenario.config(), seed, TraceMode::Lines)?;
            for line in outcome.trace.unwrap_or_default() {
                println!("{line}");
            }
            println!("trace hash {}", outcome.trace_hash.unwrap_or_default());
            Ok(outcome.failure.is_none())
        }
    }
}

fn parse_range(text: &str) -> Result<(u64, u64)> {
    let (a, b) = text.split_once("..").context("--seeds must look like 0..10000")?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if b < a {
        bail!("--seeds {text}: the end is before the start");
    }
    Ok((a, b))
}

fn run_many(seeds: &str, jobs: Option<usize>, scenario: &ScenarioArgs) -> Result<bool> {
    let (start, end) = parse_range(seeds)?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let cfg = scenario.config();
    let next = AtomicU64::new(start);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let ops = AtomicU64::new(0);
    let began = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..jobs {
            workers.push(scope.spawn(|| -> Result<()> {
                let mut engines = Engines::new(scenario.engine);
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        return Ok(());
                    }
                    // Only the failures are reported: the trace is not needed.
                    let outcome = run_seed(&mut engines, &cfg, seed, TraceMode::Off)?;
                    ops.fetch_add(u64::from(outcome.ops), Ordering::Relaxed);
                    if let Some(f) = outcome.failure {
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push((seed, f));
                    }
                }
            }));
        }
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    let secs = began.elapsed().as_secs_f64();
    let n = end - start;
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    for (seed, why) in &failures {
        println!("seed {seed} FAILED: {why}");
        println!("  replay: {}", scenario.replay_command(*seed));
    }
    println!(
        "{n} scenarios ({} instances, {:?} engine, {:?} server) in {secs:.1} s on {jobs} workers: \
         {:.0} scenarios/s, {:.0} remote ops/s; {} failed",
        cfg.instances,
        scenario.engine,
        scenario.profile,
        n as f64 / secs,
        ops.load(Ordering::Relaxed) as f64 / secs,
        failures.len()
    );
    Ok(failures.is_empty())
}
