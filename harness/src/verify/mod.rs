//! `harness verify`: the conformance cases against any implementation — a built-in style or a
//! guest — before anything of it is measured (TechEmpower's verify step).
//!
//! Every case starts its own herd from the real binary (a places backend and the five servers of
//! the default topology, `harness serve --impl NAME`, each on a free loopback port), speaks the
//! protocol to it as a client would, and checks every byte that comes back. The same cases are the
//! `cargo test -p harness --test conformance` suite, one `#[test]` per style and case.
//!
//! ```text
//! $ harness verify --impl twisted
//! case                                    result  time   reason
//! sample_exchange                         pass    0.9 s
//! invalid_forms                           FAIL    2.1 s  "IAMAT a b" answered "" instead of "? IAMAT a b"
//! …
//! verify: twisted failed 1 of 20 cases (logs of each failed case kept under target/verify/…)
//! ```
//!
//! A guest that passes every case is stamped verified for its folder's content hash
//! (`.guest/verified`); `harness run` measures only a guest so stamped.
//!
//! # Layout
//! - [`cases`]: the cases, each `fn(style: &str)` that panics with its reason on failure.
//! - [`client`]: a blocking line client with bounded reads, and the reply shapes.
//! - [`fixture`]: [`fixture::Herd`], the harness's own herd launcher, panicking on failure.

pub mod cases;
pub mod client;
pub mod fixture;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// A conformance case: its name and the function that runs it against a style.
pub type Case = (&'static str, fn(&str));

/// Every case, in the order they are listed and run.
pub const CASES: &[Case] = &[
    ("sample_exchange", cases::sample_exchange),
    ("white_space_is_flexible", cases::white_space_is_flexible),
    ("invalid_forms", cases::invalid_forms),
    ("older_update_ignored", cases::older_update_ignored),
    ("flooding_reaches_every_server", cases::flooding_reaches_every_server),
    ("whatsat_json", cases::whatsat_json),
    ("pipelined_lines_answered_in_order", cases::pipelined_lines_answered_in_order),
    ("a_late_reader_is_paused_not_dropped", cases::a_late_reader_is_paused_not_dropped),
    ("pipelined_whatsat_sees_preceding_iamat", cases::pipelined_whatsat_sees_preceding_iamat),
    ("split_line_reassembled", cases::split_line_reassembled),
    ("concurrent_clients", cases::concurrent_clients),
    ("herd_survives_and_relinks_a_restarted_server", cases::herd_survives_and_relinks_a_restarted_server),
    ("oversized_line_closes_only_its_connection", cases::oversized_line_closes_only_its_connection),
    ("abrupt_disconnects_are_harmless", cases::abrupt_disconnects_are_harmless),
    ("dead_upstream_still_framed", cases::dead_upstream_still_framed),
    ("failing_upstream_still_framed", cases::failing_upstream_still_framed),
    ("hung_neighbour_drops_bounded_and_recovers", cases::hung_neighbour_drops_bounded_and_recovers),
    ("forged_updates_change_nothing", cases::forged_updates_change_nothing),
    ("wrong_key_and_replayed_links_are_refused", cases::wrong_key_and_replayed_links_are_refused),
    ("connections_past_the_cap_are_closed", cases::connections_past_the_cap_are_closed),
    ("echo_mode_returns_every_line_unchanged", cases::echo_mode_returns_every_line_unchanged),
    ("slow_upstream_answered_at_the_timeout", cases::slow_upstream_answered_at_the_timeout),
    ("a_client_owed_past_max_output_is_closed", cases::a_client_owed_past_max_output_is_closed),
    (
        "a_client_that_never_reads_is_closed_after_the_write_stall",
        cases::a_client_that_never_reads_is_closed_after_the_write_stall,
    ),
    ("unanswered_link_hello_is_abandoned_and_retried", cases::unanswered_link_hello_is_abandoned_and_retried),
];

/// Where the cases find the binary their herds run, and where the herds' files go.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `harness` binary every herd's children run.
    pub exe: PathBuf,
    /// The folder each herd gets a folder of its own in (kept when its case fails).
    pub logs: PathBuf,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the binary and the logs folder, once per process (the tests name `CARGO_BIN_EXE_harness`;
/// `harness verify` its own executable). Later calls keep the first settings.
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("harness")),
        logs: std::env::temp_dir().join("herdbench-verify"),
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The implementations to verify: a name, a comma list, `all` (the built-in styles) or
    /// `guests` (every guest found).
    #[arg(long = "impl")]
    pub implementation: String,
    /// Only the cases whose name contains this.
    #[arg(long)]
    pub case: Option<String>,
    /// Cases run at once (each starts a herd of its own).
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// A case still running after this long is reported failed (its herd is left to the process's end).
    #[arg(long, default_value = "120s", value_parser = herd_record::units::parse_duration)]
    pub case_timeout: Duration,
    /// A guest's folder (or a folder of guests) to look for `--impl` names in, beside guests/.
    #[arg(long = "guest", value_name = "PATH")]
    pub guests: Vec<PathBuf>,
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub case: &'static str,
    pub elapsed: Duration,
    /// `None` when it passed; otherwise why not.
    pub failure: Option<String>,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let names = crate::server::impls::expand(&args.implementation)?;
    let cases: Vec<Case> =
        CASES.iter().copied().filter(|(n, _)| args.case.as_ref().is_none_or(|c| n.contains(c.as_str()))).collect();
    if cases.is_empty() {
        let all: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
        bail!("no case matches --case {:?}; the cases: {}", args.case.as_deref().unwrap_or(""), all.join(", "));
    }
    // Every name resolves, and every guest is set up, before the first herd starts.
    for name in &names {
        crate::server::impls::find(name)?;
        if let Some(guest) = crate::server::guest::find(name)? {
            guest.prepare()?;
        }
    }
    let mut failed = Vec::new();
    for name in &names {
        if !verify(name, &cases, args.jobs, args.case_timeout)? {
            failed.push(name.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("verify failed for {}: see the table above for the reason of each failed case", failed.join(", "));
    }
    Ok(())
}

/// Runs `cases` against `name` from this binary, prints the table, and stamps a guest that passed
/// every case verified. Returns whether every case passed.
pub fn verify(name: &str, cases: &[Case], jobs: usize, timeout: Duration) -> Result<bool> {
    let guest = crate::server::guest::find(name)?;
    let record = guest.as_ref().map(crate::server::guest::Guest::prepare).transpose()?;
    // One folder for every herd of this process: the settings are set once, later calls keep them.
    let here = std::env::temp_dir().join("herdbench-verify").join(format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    ));
    configure(Settings { exe: std::env::current_exe().context("finding this binary")?, logs: here });
    let logs = settings().logs.clone();
    eprintln!("== verify {name}: {} cases, {jobs} at a time", cases.len());
    // The cases report through their panics; the table says what each one said.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcomes = run_cases(name, cases, jobs, timeout);
    std::panic::set_hook(previous_hook);
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    println!("{}", table(name, &outcomes));
    if failed > 0 {
        println!(
            "verify: {name} failed {failed} of {} cases (each failed case's output and logs kept under {})",
            outcomes.len(),
            logs.display()
        );
        return Ok(false);
    }
    if let (Some(guest), Some(record)) = (&guest, &record)
        && cases.len() == CASES.len()
    {
        guest.mark_verified(&record.content_hash)?;
    }
    println!("verify: {name} passed all {} cases", outcomes.len());
    Ok(true)
}

/// Runs `cases` against `style`, `jobs` at a time, each in a thread of its own.
pub fn run_cases(style: &str, cases: &[Case], jobs: usize, timeout: Duration) -> Vec<CaseOutcome> {
    let mut outcomes: Vec<Option<CaseOutcome>> = vec![None; cases.len()];
    let (tx, rx) = mpsc::channel::<(usize, CaseOutcome)>();
    let mut next = 0;
    let mut running: Vec<(usize, Instant)> = Vec::new();
    while next < cases.len() || !running.is_empty() {
        while running.len() < jobs && next < cases.len() {
            let (case, f) = cases[next];
            let (tx, style, index) = (tx.clone(), style.to_owned(), next);
            let started = Instant::now();
            std::thread::spawn(move || {
                let result = std::thread::Builder::new()
                    .name(case.into())
                    .spawn(move || f(&style))
                    .map_err(|e| format!("could not start the case: {e}"))
                    .and_then(|h| h.join().map_err(|payload| panic_text(payload.as_ref())));
                let _ = tx.send((index, CaseOutcome { case, elapsed: started.elapsed(), failure: result.err() }));
            });
            running.push((next, started));
            next += 1;
        }
        if let Ok((index, outcome)) = rx.recv_timeout(Duration::from_millis(200)) {
            running.retain(|(i, _)| *i != index);
            outcomes[index] = Some(outcome);
        }
        running.retain(|&(index, started)| {
            if started.elapsed() < timeout {
                return true;
            }
            outcomes[index] = Some(CaseOutcome {
                case: cases[index].0,
                elapsed: started.elapsed(),
                failure: Some(format!(
                    "still running after {timeout:?}: the server never answered what the case waits for"
                )),
            });
            false
        });
    }
    outcomes.into_iter().flatten().collect()
}

/// What a case's panic said.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the case failed without a message".to_owned())
}

/// The pass/fail table, one row a case, with the first 300 characters of each failure's reason.
pub fn table(style: &str, outcomes: &[CaseOutcome]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        format!("{style}: case"),
        "result".into(),
        "time".into(),
        "reason".into(),
    ]);
    for o in outcomes {
        let reason = o.failure.as_deref().map(|r| {
            let r = r.replace('\n', " ");
            if r.chars().count() > 300 { format!("{}…", r.chars().take(300).collect::<String>()) } else { r }
        });
        table.add_row(vec![
            o.case.to_owned(),
            if reason.is_some() { "FAIL".to_owned() } else { "pass".to_owned() },
            format!("{:.1} s", o.elapsed.as_secs_f64()),
            reason.unwrap_or_default(),
        ]);
    }
    table
}
