//! `harness`: herdbench's one binary. It runs whole measurements (`run`, the default), and the
//! parts they are made of as subcommands: a server of any style (`serve`), the places backend
//! (`places`) and the load generator (`load`). This file only parses the command line; the work is
//! in the `harness` library (`src/lib.rs`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harness::run::{self, gate};
use harness::server::{guest, serve};
use harness::{load, places, verify};
use herd_record::{merge, result};
use herd_report::{compare, export, report, thresholds};

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

// One value, parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Measure one style: start places and the herd, drive load, write a result file.
    Run(run::RunArgs),
    /// Run one server of a style (what `run` starts five of).
    Serve(serve::ServeArgs),
    /// Run the conformance cases against any implementation, built-in or guest, and print a
    /// pass/fail table with the reason for each failure (`run` measures only a verified guest).
    Verify(verify::VerifyArgs),
    /// Set up guests (their toolchains and dependencies, once per folder content) and print their
    /// versions; `--lint` also runs their formatters and linters.
    Setup(guest::SetupArgs),
    /// Write a fresh herd key file for `serve --herd-key` (`run` makes its own for each run).
    Keygen(serve::KeygenArgs),
    /// Run the places backend (a local Nearby Search imitation). SIGUSR1 holds every request until
    /// SIGHUP, SIGUSR2 answers every request 503 until SIGHUP (the scenarios' upstream outages).
    Places(places::PlacesArgs),
    /// Drive load at any address (a herd server, or the reference echo server).
    Load(load::LoadArgs),
    /// Turn result files into Markdown tables and SVG plots; refresh REPORT.md's generated parts.
    Report(report::ReportArgs),
    /// Compare results against a baseline; exits non-zero on a regression.
    Compare(compare::CompareArgs),
    /// The per-style CI gate: counts per request against a committed baseline.
    Gate(gate::GateArgs),
    /// Write results as Bencher Metric Format or github-action-benchmark JSON, for CI trackers,
    /// or as an HdrHistogram interval log.
    Export(export::ExportArgs),
    /// Add up several generators' results of one load into one result.
    Merge(merge::MergeArgs),
    /// Print the JSON Schema of result files.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `--guest PATH` folders reach every process this one starts (see `harness::server::guest`).
    let guest_folders = match &cli.command {
        None => &cli.run.guests,
        Some(Command::Run(args)) => &args.guests,
        Some(Command::Serve(args)) => &args.guests,
        Some(Command::Verify(args)) => &args.guests,
        Some(Command::Setup(args)) => &args.guests,
        Some(_) => &Vec::new(),
    };
    if let Err(e) = guest::add_search_folders(guest_folders) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let outcome = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run::run(&args).map(|path| println!("{}", path.display())),
        Command::Serve(args) => serve::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Setup(args) => guest::setup(&args),
        Command::Keygen(args) => serve::write_key(&args.file).map(|()| println!("{}", args.file.display())),
        Command::Places(args) => places::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Gate(args) => gate::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Schema => export::to_stdout(result::schema_json().as_bytes()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<thresholds::Breached>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(thresholds::EXIT_BREACHED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
