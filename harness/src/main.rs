//! `harness`: herdbench's one binary. It runs whole measurements (`run`, the default), and the
//! parts they are made of as subcommands: a server of any style (`serve`), the places backend
//! (`places`) and the load generator (`load`).
//!
//! # Layout
//! - [`run`]: orchestration of a measurement; [`procs`]: child processes; [`machine`]: environment.
//! - [`serve`]: one server process; [`impls`]: the registry of styles.
//! - [`places`]: the places backend.
//! - [`load`]: the load generator; [`workload`]: workload files; [`topology`]: the herd's shape.
//! - [`result`]: the result file format; [`summary`]: the printed table; [`units`]: CLI units.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod collection;
mod compare;
mod impls;
mod load;
mod machine;
mod places;
mod plots;
mod procs;
mod report;
mod result;
mod run;
mod serve;
mod summary;
mod sweep;
mod topology;
mod units;
mod workload;

/// Compare concurrency styles on one network service, with numbers you can trust.
#[derive(Debug, Parser)]
#[command(name = "harness", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `harness` runs a measurement (`harness run`).
    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure one style: start places and the herd, drive load, write a result file.
    Run(run::RunArgs),
    /// Run one server of a style (what `run` starts five of).
    Serve(serve::ServeArgs),
    /// Run the places backend (a local Nearby Search imitation).
    Places(places::PlacesArgs),
    /// Drive load at any loopback address (a herd server, or the reference echo server).
    Load(load::LoadArgs),
    /// Turn result files into Markdown tables and SVG plots; refresh REPORT.md's generated parts.
    Report(report::ReportArgs),
    /// Compare results against a baseline; exits non-zero on a regression.
    Compare(compare::CompareArgs),
    /// Print the JSON Schema of result files.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run::run(&args).map(|path| println!("{}", path.display())),
        Command::Serve(args) => serve::run(&args),
        Command::Places(args) => places::run(&args),
        Command::Load(args) => load_command(&args),
        Command::Report(args) => report::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Schema => {
            print!("{}", result::schema_json());
            Ok(())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `harness load`: prints the summary line and per-command table.
fn load_command(args: &load::LoadArgs) -> anyhow::Result<()> {
    for addr in &args.addrs {
        load::require_loopback(addr)?;
    }
    let workload = load::workload_for(&args.workload, args.mode)?;
    let targets = args.addrs.iter().map(|a| load::Target { addr: *a, name: None }).collect();
    let spec = args.common.spec(targets, workload, args.load)?;
    load::announce_clients(&spec)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, std::sync::Arc::clone(&stop))?;
    let progress = load::Progress::default();
    let outcome = load::generate(&spec, &progress, &stop)?;
    let s = &outcome.summary;
    println!(
        "{:.0} replies/s ({} connections, {} errors); latency µs p50 {} p99 {} p99.9 {} max {}",
        s.achieved_rps,
        spec.connections,
        s.errors,
        s.latency_us.p50,
        s.latency_us.p99,
        s.latency_us.p999,
        s.latency_us.max
    );
    for (k, n) in outcome.errors.iter().filter(|(_, n)| **n > 0) {
        println!("  {k}: {n}");
    }
    Ok(())
}
