//! The harness as a user meets it: a short `harness run` end to end, its result file checked
//! against the committed JSON Schema, and the CLI's answers to bad arguments.

mod common;

use common::{harness, temp_dir};

fn schema() -> jsonschema::Validator {
    let text = include_str!("../../results/schema/result.schema.json");
    let schema: serde_json::Value = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn run_and_validate(extra: &[&str], name: &str) -> serde_json::Value {
    let dir = temp_dir(name);
    let result = run_into(&dir, extra);
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// Runs a short measurement writing `<dir>/result.json`, checks it against the schema, returns it.
fn run_into(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out_path = dir.join("result.json");
    let out = out_path.to_str().expect("utf8 path");
    let mut args = vec!["run", "--impl", "threadpool", "--duration", "1s", "--warmup", "500ms", "--output", out];
    args.extend_from_slice(extra);
    let output = harness(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "harness run failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().last(), Some(out), "the last line printed is the result file's path");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_path).expect("result written")).expect("JSON");
    let errors: Vec<String> =
        schema().iter_errors(&result).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "result does not match the schema: {errors:#?}");
    result
}

#[test]
fn a_short_herd_run_writes_a_valid_result_with_no_errors() {
    let r = run_and_validate(&["--load", "500", "--connections", "8"], "herd");
    let summary = &r["summary"];
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["offered_rps"], 500.0);
    let achieved = summary["achieved_rps"].as_f64().expect("number");
    assert!(achieved > 400.0, "achieved {achieved}/s of 500/s offered");
    assert!(r["commands"]["iamat"]["count"].as_u64().expect("count") > 0);
    let servers = r["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 5);
    for s in servers {
        assert_eq!(s["resources"]["exit"], "exited 0", "graceful stop: {s}");
        assert!(s["counters"]["counters"]["iamat"].as_u64().expect("counted") > 0);
        // Some server CPU time, but not necessarily user time: the kernel charges whole ticks, and
        // a lightly loaded server's ticks can all land in system time (seen: user 0.0, sys 0.13).
        let user = s["resources"]["cpu_user_s"].as_f64().expect("cpu_user_s");
        let sys = s["resources"]["cpu_sys_s"].as_f64().expect("cpu_sys_s");
        for t in [user, sys] {
            assert!(t.is_finite() && t >= 0.0, "CPU times are finite and never negative: {s}");
        }
        assert!(user + sys > 0.0, "a server that answered requests used some CPU: {s}");
        // Over the window, every server waited for requests between bursts of them.
        let w = &s["window"];
        let count = |k: &str| w[k].as_u64().unwrap_or_else(|| panic!("window.{k} in {s}"));
        assert!(count("voluntary_switches") > 0, "{w}");
        let life = user + sys;
        let window_cpu = w["cpu_user_s"].as_f64().expect("cpu") + w["cpu_sys_s"].as_f64().expect("cpu");
        // Both are the kernel's tick-based accounting; allow a tick of rounding.
        assert!(
            (0.0..=life + 0.02).contains(&window_cpu),
            "the window's CPU is part of the life's: {window_cpu} of {life}"
        );
    }
    let g = &r["generator_window"];
    assert!(g["voluntary_switches"].as_u64().expect("generator counted") > 0, "{g}");
    assert!(r["propagation_us"]["count"].as_u64().expect("floods measured") > 0);
    assert_eq!(r["schema_version"], 1);
    let limits = &r["parameters"]["limits"];
    assert_eq!(limits["link_queue_bytes"], 1024 * 1024, "the default limits are recorded: {limits}");
    assert_eq!(limits["upstream_timeout_s"], 3.0, "{limits}");
    assert_eq!(r["parameters"]["herd_auth"], "key", "a run's herd has a key unless told otherwise");
}

#[test]
fn a_hangup_stops_serve_as_gracefully_as_sigterm() {
    // Over `ssh -tt` (a hosts file's launcher) the end of the session reaches the server as SIGHUP:
    // it must still write its counters and exit 0, or the run loses them.
    let dir = temp_dir("hangup");
    for (signal, name) in [(libc::SIGHUP, "hup"), (libc::SIGTERM, "term")] {
        let stats = dir.join(format!("{name}.stats.json"));
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let mut child = common::harness_command()
            .args(["serve", "--impl", "threadpool", "--mode", "echo", "--listen", &addr.to_string(), "--stats"])
            .arg(&stats)
            .spawn()
            .expect("serve starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "serve listens on {addr}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().expect("serve exits");
        assert!(status.success(), "{name}: {status:?}");
        let counters: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stats).expect("counters written")).expect("JSON");
        assert!(counters["counters"].is_object(), "{name}: {counters}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn keygen_writes_a_key_only_its_owner_reads_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("keygen");
    let path = dir.join("herd.key");
    let path_text = path.to_str().expect("utf-8 path");
    let out = harness(&["keygen", path_text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = std::fs::read_to_string(&path).expect("written");
    assert!(herd_core::HerdKey::from_hex(&key).is_ok(), "a key serve accepts: {key:?}");
    let mode = std::fs::metadata(&path).expect("exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read a herd key");
    let again = harness(&["keygen", path_text]);
    assert!(!again.status.success(), "an existing key is never overwritten");
    assert_eq!(std::fs::read_to_string(&path).expect("still there"), key);
}

#[test]
fn syscalls_are_counted_over_the_window_when_perf_can() {
    let dir = temp_dir("syscalls");
    let out_path = dir.join("result.json");
    let out = out_path.to_str().expect("utf8 path");
    let args = ["run", "--impl", "threadpool", "--duration", "1s", "--warmup", "300ms", "--load", "500"];
    let output = harness(&[&args[..], &["--connections", "4", "--syscalls", "--output", out]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path).expect("result")).expect("JSON");
    let _ = std::fs::remove_dir_all(dir);
    match r.get("server_syscalls") {
        Some(counts) => {
            let get = |k: &str| counts[k].as_u64().unwrap_or(0);
            // 500 requests answered by recvfrom/sendto at the least, out of every call counted.
            assert!(get("recvfrom") >= 500 && get("sendto") >= 500, "{counts}");
            assert!(get("all") >= get("recvfrom") + get("sendto") + get("futex"), "{counts}");
            // A plausible count for a second at 500/s (the spinning pool makes ~100 calls per
            // request on two cores; a thousand per request would mean counting the wrong thing).
            assert!(get("all") < 500 * 1000, "{counts}");
        }
        None => assert!(stderr.contains("perf cannot count here"), "no counts and no word why:\n{stderr}"),
    }
}

#[test]
fn a_closed_loop_echo_run_reports_null_offered_rate() {
    let r = run_and_validate(
        &["--mode", "echo", "--load", "max", "--connections", "4", "--max-line", "4KiB", "--flush-at", "16KiB"],
        "echo",
    );
    assert_eq!(r["summary"]["offered_rps"], serde_json::Value::Null);
    let limits = &r["parameters"]["limits"];
    assert_eq!((&limits["max_line_bytes"], &limits["flush_at_bytes"]), (&4096.into(), &16384.into()), "{limits}");
    assert_eq!(r["summary"]["errors"], 0);
    assert!(r["commands"]["echo"]["count"].as_u64().expect("count") > 100);
    assert_eq!(r["servers"].as_array().map(Vec::len), Some(1));
}

/// k6's thresholds: one short run judged twice from its own result, once with every threshold
/// met (exit 0) and once with one that cannot be (exit 99, naming it, the result kept).
#[test]
fn thresholds_pass_or_exit_99_naming_the_breach_and_keep_the_result() {
    let dir = temp_dir("thresholds");
    let out = dir.join("result.json");
    let run = |thresholds: &[&str]| {
        let mut args = vec!["run", "--impl", "threadpool", "--load", "300", "--connections", "4", "--duration", "1s"];
        args.extend(["--warmup", "300ms", "--output", out.to_str().expect("utf8")]);
        for t in thresholds {
            args.extend(["--threshold", t]);
        }
        harness(&args)
    };
    let met = run(&["errors==0", "p99<30s", "throughput>100", "cpu-per-request<1s"]);
    let stdout = String::from_utf8_lossy(&met.stdout);
    assert_eq!(met.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&met.stderr));
    assert!(stdout.contains("p99<30s") && stdout.contains("ok") && !stdout.contains("BREACHED"), "{stdout}");
    std::fs::remove_file(&out).expect("the result was written");
    let breached = run(&["errors==0", "p50<1us"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&breached.stdout), String::from_utf8_lossy(&breached.stderr));
    assert_eq!(breached.status.code(), Some(99), "{stdout}\n{stderr}");
    assert!(stdout.contains("BREACHED"), "the table marks the breach:\n{stdout}");
    assert!(stderr.contains("threshold(s) breached: 'p50<1us'"), "{stderr}");
    assert!(out.exists(), "a breach keeps the measurement");
    let _ = std::fs::remove_dir_all(dir);
}

/// `harness schema | head -1`: a reader that stops reading ends the program quietly, not with a
/// panic (exit 101).
#[test]
fn a_closed_standard_output_ends_the_program_quietly() {
    for args in [&["schema"][..], &["export", "--format", "bmf", "results/baseline/smoke"][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("harness starts");
        // The reading end closed before the program writes: its first write finds no reader.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("harness ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?}\n{stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_arguments_say_what_to_type_instead() {
    let cases: &[(&[&str], &str)] = &[
        (&["--load", "tenk"], "10k"),
        (&["--impl", "nope", "--duration", "1s"], "threadpool"),
        (&["--workload", "nope", "--duration", "1s"], "herd-mixed"),
        (&["--duration", "ten"], "10s"),
        (&["load", "--addr", "localhost", "--duration", "1s"], "--addr 127.0.0.1:12000"),
        (&["serve", "--impl", "threadpool", "--peer", "Ball"], "NAME=ADDR"),
        (&["--link-queue-bytes", "1MB", "--duration", "1s"], "1MiB"),
        (&["--link-loss", "1", "--duration", "1s"], "1%"),
        (&["--link-delay", "far", "--duration", "1s"], "500ms"),
        (&["serve", "--impl", "threadpool", "--link-retry", "soon"], "500ms"),
        (&["serve", "--impl", "threadpool"], "--herd-key herd.key"),
        (&["serve", "--impl", "threadpool", "--name", "Al ford", "--insecure-herd"], "--name Alford"),
        (&["serve", "--impl", "threadpool", "--herd-key", "/nonexistent/herd.key"], "cannot read the herd key"),
        (&["--threshold", "p99<10", "--duration", "1s"], "p99<10ms"),
        (&["--threshold", "latency<10ms", "--duration", "1s"], "the metrics are p50, p99"),
        (&["--threshold", "syscalls-per-request<30", "--duration", "1s"], "add --syscalls"),
        (&["load", "--addr", "127.0.0.1:9", "--threshold", "cpu-per-request<1ms"], "use `harness run`"),
        // More connections than any process may hold: refused before a server starts, naming the
        // kernel's ceiling and the sysctl that raises it.
        (&["--connections", "2000000", "--duration", "1s"], "sysctl -w fs.nr_open=2001024"),
        (&["load", "--addr", "127.0.0.1:9", "--connections", "2000000"], "sysctl -w fs.nr_open=2001024"),
        (&["load", "--addr", "127.0.0.1:9", "--source-addrs", "127.0.0.2,nope"], "invalid IP address"),
    ];
    for (args, hint) in cases {
        let out = harness(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(hint), "{args:?}: error should mention `{hint}`:\n{stderr}");
    }
}

#[test]
fn compare_flags_a_slower_run_and_report_writes_tables_and_plots() {
    let dir = temp_dir("compare");
    let base_dir = dir.join("baseline");
    let slow_dir = dir.join("slow");
    std::fs::create_dir_all(&base_dir).expect("dir");
    std::fs::create_dir_all(&slow_dir).expect("dir");
    let mut result = run_into(&base_dir, &["--load", "300", "--connections", "4"]);
    // Whether this run's generator kept its schedule depends on how busy the machine is, and this
    // test is about verdicts: every variant below says it did, but `behind`, which says it did not.
    result["send_lag"]["fell_behind"] = serde_json::json!(false);
    std::fs::write(base_dir.join("result.json"), serde_json::to_vec(&result).expect("json")).expect("write");
    let behind_dir = dir.join("behind");
    std::fs::create_dir_all(&behind_dir).expect("dir");
    let mut behind = result.clone();
    behind["send_lag"]["fell_behind"] = serde_json::json!(true);
    std::fs::write(behind_dir.join("result.json"), serde_json::to_vec(&behind).expect("json")).expect("write");
    // The same run with one server dropping flood lines: latency unchanged, the herd not.
    let lossy_dir = dir.join("lossy");
    std::fs::create_dir_all(&lossy_dir).expect("dir");
    let mut lossy = result.clone();
    lossy["servers"][0]["counters"]["counters"]["floods_dropped"] = serde_json::json!(5);
    std::fs::write(lossy_dir.join("result.json"), serde_json::to_vec(&lossy).expect("json")).expect("write");
    // The same run with every latency tripled stands in for a slowed build.
    for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        let v = result["summary"]["latency_us"][p].as_u64().expect("number");
        result["summary"]["latency_us"][p] = serde_json::json!(v * 3);
    }
    std::fs::write(slow_dir.join("result.json"), serde_json::to_vec(&result).expect("json")).expect("write");
    let base = base_dir.to_str().expect("utf8");
    let slow = slow_dir.to_str().expect("utf8");

    let same = harness(&["compare", "--baseline", base, "--current", base]);
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{text}{}", String::from_utf8_lossy(&same.stderr));
    assert!(text.contains("no change") && !text.contains("regressed"), "{text}");

    let worse = harness(&["compare", "--baseline", base, "--current", slow, "--metrics", "p50,p99"]);
    let text = String::from_utf8_lossy(&worse.stdout);
    assert!(!worse.status.success(), "a tripled latency must fail the comparison:\n{text}");
    assert!(text.contains("regressed"), "{text}");

    // A run whose generator fell behind is left out of verdicts, unless asked for.
    let behind = behind_dir.to_str().expect("utf8");
    let left_out = harness(&["compare", "--baseline", base, "--current", behind]);
    let stderr = String::from_utf8_lossy(&left_out.stderr);
    assert!(!left_out.status.success() && stderr.contains("leaving out"), "{stderr}");
    let kept = harness(&["compare", "--baseline", base, "--current", behind, "--include-behind"]);
    assert!(kept.status.success(), "{}", String::from_utf8_lossy(&kept.stderr));

    let lossy = harness(&["compare", "--baseline", base, "--current", lossy_dir.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&lossy.stdout);
    assert!(!lossy.status.success(), "new dropped floods must fail the comparison:\n{text}");
    assert!(text.contains("new floods dropped"), "{text}");

    let report_dir = dir.join("report");
    let report = harness(&["report", base, "--out", report_dir.to_str().expect("utf8")]);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let md = std::fs::read_to_string(report_dir.join("report.md")).expect("report.md");
    assert!(md.contains("| threadpool | 300 | default | 4 |"), "{md}");
    // One style's runs get a spectrum and a timeline of their own, each captioned, naming its run.
    for figure in ["latency-spectrum-herd-mixed-300", "timeline-herd-mixed-300"] {
        let svg = std::fs::read_to_string(report_dir.join(format!("{figure}.svg"))).expect("the figure");
        assert!(svg.contains(&format!("from {base}")), "{figure} names its run: {base}");
        assert!(md.contains(&format!("*{figure}: ")), "{figure} has a caption: {md}");
    }
    // A PNG beside each SVG where a font for its text exists; otherwise the report says why not.
    let font = herd_report::plots::FONT_FILES.iter().any(|f| std::path::Path::new(f).exists());
    let png = report_dir.join("latency-spectrum-herd-mixed-300.png");
    if font {
        let bytes = std::fs::read(&png).expect("a PNG beside the SVG");
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    } else {
        assert!(!png.exists() && String::from_utf8_lossy(&report.stderr).contains("fonts-dejavu-core"));
    }
    // Every figure link resolves from the markdown file that holds it.
    let links: Vec<&str> =
        md.lines().filter_map(|l| l.strip_prefix("![")?.split_once("](")?.1.strip_suffix(')')).collect();
    assert!(!links.is_empty(), "{md}");
    for link in links {
        let relative = !std::path::Path::new(link).is_absolute();
        assert!(relative && report_dir.join(link).exists(), "figure link {link} does not resolve from report.md");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn committed_result_files_match_the_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
    let validator = schema();
    let mut stack = vec![root.join("runs"), root.join("baseline")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
            if path.is_dir() {
                if name != "gungraun" && name != "report" && name != "gate" {
                    stack.push(path);
                }
            } else if name.ends_with(".json") {
                let value: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).expect("readable")).expect("result files are JSON");
                let errors: Vec<String> =
                    validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
                assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no committed result files found under {}", root.display());
}

/// An echo server on a loopback port, a thread per connection, for as long as the test runs.
fn echo_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let _ = std::io::copy(&mut &stream, &mut &stream);
            });
        }
    });
    addr
}

#[test]
fn merge_adds_two_generators_histograms_and_says_what_it_assumed() {
    use herd_record::result::{Percentiles, RunResult};
    let dir = temp_dir("merge");
    let addr = echo_server().to_string();
    let file = |name: &str| dir.join(name).to_str().expect("utf8").to_owned();
    // Two generators sharing one schedule of 800 requests/s from one start time, as two
    // machines' would.
    let start_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let start_at = start_at.to_rfc3339();
    let generator = |slice: &str, out: String| {
        let args = ["load", "--addr", &addr, "--workload", "echo", "--connections", "8", "--load", "800"];
        common::harness_command()
            .args(args)
            .args(["--slice", slice, "--start-at", &start_at, "--duration", "2s", "--warmup", "0s", "--output", &out])
            .output()
    };
    let (a, b) = (file("a.json"), file("b.json"));
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| generator("0/2", a.clone()));
        let second = generator("1/2", b.clone());
        (first.join().expect("thread").expect("runs"), second.expect("runs"))
    });
    for out in [&first, &second] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let merged_file = file("merged.json");
    let out = harness(&["merge", &a, &b, "--output", &merged_file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let read = |f: &str| -> (serde_json::Value, RunResult) {
        let text = std::fs::read_to_string(f).expect("result");
        (serde_json::from_str(&text).expect("JSON"), serde_json::from_str(&text).expect("a result"))
    };
    let ((va, ra), (vb, rb), (vm, m)) = (read(&a), read(&b), read(&merged_file));
    for (v, name) in [(&va, "a"), (&vb, "b"), (&vm, "merged")] {
        let errors: Vec<String> = schema().iter_errors(v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name} breaks the schema: {errors:?}");
    }
    assert_eq!(ra.implementation.name, "external");
    assert_eq!(ra.summary.errors + rb.summary.errors, 0);
    let (ha, hb) = (ra.commands["echo"].histogram().expect("a"), rb.commands["echo"].histogram().expect("b"));
    let mut both = ha.clone();
    both.add(&hb).expect("same bounds");
    // The merged percentiles are those of all requests together, not some mix of the two runs'.
    assert_eq!(m.commands["echo"].count, ha.len() + hb.len());
    assert_eq!(m.commands["echo"].percentiles_us, Percentiles::of(&both));
    assert_eq!(m.summary.latency_us, Percentiles::of(&both));
    assert_eq!(m.summary.requests, ra.summary.requests + rb.summary.requests);
    assert_eq!((ra.summary.offered_rps, ra.parameters.slice.as_deref()), (Some(400.0), Some("0/2")));
    assert_eq!(m.summary.offered_rps, Some(800.0), "the two halves make the whole load");
    assert_eq!((m.parameters.slice.as_deref(), m.parameters.connections), (None, 16));
    let merged = m.merged.expect("says it is merged");
    assert_eq!(merged.files, [a.clone(), b.clone()]);
    // Started together by the wall clock: well inside the 2 s window (typically milliseconds).
    assert!(merged.start_spread_s < 1.0 && merged.clocks.contains("assumed"), "{merged:?}");

    // Runs of different experiments are refused with what differs.
    let other = file("other.json");
    let mut different: serde_json::Value = va.clone();
    different["parameters"]["duration_s"] = serde_json::json!(5.0);
    std::fs::write(&other, different.to_string()).expect("write");
    let refused = harness(&["merge", &a, &other, "--output", &file("no.json")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("window"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_scenario_hangs_crashes_and_fails_members_on_time_and_records_how_the_herd_recovered() {
    let dir = temp_dir("scenario");
    let scenario = dir.join("faults.toml");
    std::fs::write(
        &scenario,
        r#"
description = "every kind of member fault and an upstream outage, briefly"
workload = "herd-mixed"
objective = "50ms"
[[phase]]
name = "steady"
duration = "3500ms"
load = "1x"
[[event]]
action = "hang"
member = "Welsh"
at = "500ms"
for = "500ms"
[[event]]
action = "upstream-fail"
at = "1100ms"
for = "300ms"
[[event]]
action = "crash"
member = "Ball"
at = "1600ms"
restart_after = "500ms"
"#,
    )
    .expect("scenario written");
    let file = scenario.to_str().expect("utf8");
    let r = run_into(&dir, &["--scenario", file, "--load", "1000", "--connections", "10"]);
    let s = &r["scenario"];
    let steps = s["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 35, "3.5 s in 100 ms steps");
    for e in s["events"].as_array().expect("events") {
        assert!(e["error"].is_null(), "{e}");
        for edge in 0..2 {
            let (planned, done) = (e["planned_ms"][edge].as_u64(), e["done_ms"][edge].as_u64());
            let (planned, done) = (planned.expect("planned"), done.unwrap_or_else(|| panic!("not done: {e}")));
            assert!((planned..planned + 500).contains(&done), "done at {done} ms, planned {planned} ms: {e}");
        }
    }
    let at = |step: &serde_json::Value| step["at_ms"].as_u64().expect("at_ms");
    // The hang: requests to Welsh wait until SIGCONT, ~500 ms, and then all arrive.
    let worst = steps.iter().map(|st| st["p99_us"].as_u64().expect("p99")).max().expect("steps");
    assert!(worst >= 300_000, "no step shows the 500 ms hang: worst p99 {worst} µs");
    // The upstream outage: WHATSATs fail with upstream errors then, and only then.
    let upstream: Vec<u64> =
        steps.iter().filter(|st| st["errors"]["upstream_error"].as_u64().unwrap_or(0) > 0).map(at).collect();
    assert!(!upstream.is_empty(), "the outage failed no WHATSAT");
    assert!(upstream.iter().all(|&t| (1000..1600).contains(&t)), "upstream errors outside the outage: {upstream:?}");
    // The crash: the rest of the herd answers without a failure, and the restarted member answers.
    let recovery = s["recovery"].as_array().expect("recovery");
    let crash = recovery.iter().find(|r| r["disturbance"] == "crash Ball").expect("the crash's recovery");
    assert_eq!(crash["errors_on_others"], 0, "{crash}");
    assert!(crash["member_completed_after"].as_u64().expect("counted") > 0, "{crash}");
    let hang = recovery.iter().find(|r| r["disturbance"] == "hang Welsh").expect("the hang's recovery");
    assert!(hang["late"].as_u64().expect("late") > 0, "{hang}");
    let phase = &s["phases"][0];
    assert_eq!(phase["per_connection"].as_array().map(Vec::len), Some(10), "{phase}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A new user's first steps outside the checkout: `cargo install --path harness` into a scratch
/// root, then `run` at a tiny load, `report` and `export` from an empty folder. Everything lands
/// in that folder; nothing of the checkout changes (its `git status`), and no result of the run
/// appears in the checkout's results/ (the workloads come from the binary, not from the checkout).
#[test]
fn an_installed_binary_works_from_an_empty_folder_and_leaves_the_checkout_alone() {
    let checkout = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let git_status = || {
        let out = std::process::Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=all"])
            .current_dir(checkout)
            .output()
            .expect("git runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = git_status();
    let scratch = temp_dir("installed");
    let (root, empty) = (scratch.join("root"), scratch.join("empty"));
    std::fs::create_dir_all(&empty).expect("an empty folder");
    // The dev profile and this workspace's target folder: what `cargo test` just built is reused.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let install = std::process::Command::new(cargo)
        .args(["install", "--quiet", "--debug", "--locked", "--offline", "--path"])
        .arg(checkout.join("harness"))
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", checkout.join("target"))
        .output()
        .expect("cargo runs");
    assert!(install.status.success(), "cargo install: {}", String::from_utf8_lossy(&install.stderr));
    let installed = |args: &[&str]| {
        let out = std::process::Command::new(root.join("bin/harness"))
            .args(args)
            .current_dir(&empty)
            .output()
            .expect("the installed harness runs");
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "harness {args:?}:\n{text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let printed =
        installed(&["run", "--impl", "threadpool", "--load", "200", "--connections", "4", "--duration", "1s"]);
    let result = printed.lines().last().expect("the result's path").to_owned();
    assert!(result.starts_with("results/") && empty.join(&result).is_file(), "in the folder it ran in: {result}");
    let name = std::path::Path::new(&result).file_name().expect("a file name");
    assert!(!checkout.join("results").join(name).exists(), "a result written into the checkout");
    installed(&["report", "results", "--out", "report"]);
    assert!(empty.join("report/report.md").is_file(), "report writes where it is told");
    let bmf = installed(&["export", "results", "--format", "bmf"]);
    assert!(bmf.contains("herd-mixed/threadpool/200/c4"), "{bmf}");
    // Guests come from the `guests/` of the folder it runs in or an ancestor's, never from the
    // checkout it was built in: here a toy guest, found from a folder below, and not twisted.
    let toy = empty.join("guests/toy");
    std::fs::create_dir_all(&toy).expect("a guest folder");
    std::fs::write(
        toy.join("impl.toml"),
        "name = \"toy\"\nstyle = \"s\"\nruntime = \"r\"\nmechanism = \"m\"\nupstream_wait = \"u\"\n\
         threads = \"t\"\nmodes = [\"echo\"]\n[guest]\nlanguage = \"sh\"\nsetup = \"true\"\n\
         versions = \"true\"\nserve = [\"{dir}/server\"]\n",
    )
    .expect("its impl.toml");
    let below = empty.join("below");
    std::fs::create_dir_all(&below).expect("a folder below");
    let unknown = std::process::Command::new(root.join("bin/harness"))
        .args(["run", "--impl", "nosuch", "--load", "100"])
        .current_dir(&below)
        .output()
        .expect("the installed harness runs");
    let listed = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && listed.contains("unknown implementation"), "{listed}");
    assert!(listed.contains(", toy") && !listed.contains("twisted"), "guests listed: {listed}");
    assert_eq!(git_status(), before, "the checkout changed");
    let _ = std::fs::remove_dir_all(scratch);
}

/// The README's commands are true: in its code blocks, every command line of the harness
/// (`cargo run --release -p harness -- …`, `target/release/harness …`, `sudo …` of them) names a
/// subcommand that answers `--help`, only flags that subcommand's `--help` lists, and only styles,
/// guests and workloads that exist. A renamed flag or style (the `--impl tokio` it once showed)
/// fails here.
#[test]
fn the_readmes_commands_name_real_subcommands_flags_styles_and_workloads() {
    let readme = include_str!("../../README.md");
    let mut in_block = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let code = line.split("  #").next().unwrap_or(line).trim().trim_end_matches('\\').trim();
        let code = code.strip_prefix("sudo ").unwrap_or(code);
        let rest = code
            .strip_prefix("cargo run --release -p harness -- ")
            .or_else(|| code.strip_prefix("target/release/harness "))
            .or_else(|| code.strip_prefix("target/release/harness"));
        if let (true, Some(rest)) = (in_block, rest) {
            commands.push(rest.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
        }
    }
    assert!(commands.len() >= 20, "the README's commands were not found: {commands:?}");
    let subcommands = [
        "run", "serve", "verify", "setup", "keygen", "places", "load", "report", "compare", "gate", "export", "merge",
        "schema",
    ];
    let styles: Vec<String> =
        herd_record::catalogue::styles().expect("the styles").into_iter().map(|m| m.name).collect();
    let guests = harness::server::impls::expand("guests").expect("the guests");
    let mut helps = std::collections::BTreeMap::new();
    for words in &commands {
        let sub = words.first().filter(|w| subcommands.contains(&w.as_str())).cloned().unwrap_or_else(|| "run".into());
        let help = helps.entry(sub.clone()).or_insert_with(|| {
            let out = harness(&[sub.as_str(), "--help"]);
            assert!(out.status.success(), "harness {sub} --help");
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        for (i, word) in words.iter().enumerate() {
            if word.starts_with("--") && word.len() > 2 {
                let flag = word.split('=').next().expect("a flag");
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "README: `harness {sub} … {flag}`: no such flag ({words:?})"
                );
            }
            let value = words.get(i + 1).map(String::as_str).unwrap_or_default();
            // `--impl mine --guest ~/my-server` names a user's own guest.
            if word == "--impl" && !words.iter().any(|w| w == "--guest") {
                for name in value.split(',') {
                    let known = ["all", "guests"].contains(&name) || styles.iter().chain(&guests).any(|s| s == name);
                    assert!(known, "README: `--impl {name}`: no such style or guest ({words:?})");
                }
            }
            if word == "--workload" {
                for name in value.split(',') {
                    assert!(
                        herd_record::workload::available().iter().any(|w| w == name),
                        "README: `--workload {name}` ({words:?})"
                    );
                }
            }
        }
    }
}

/// The HTML report in a real browser (headless Chromium; `scripts/browser.sh` installs it, CI runs
/// it and sets `HERDBENCH_REQUIRE_BROWSER`): REPORT.md's guests part regenerated into a copy, its
/// page loaded with console logging on. The page loads with no console message and no script
/// error, leads with the answer, inlines its figures (nothing fetched), marks the verdicts, finds
/// the target of every link within it, and sorts a table by a numeric column in order (its
/// `#selftest`).
#[test]
fn the_html_report_opens_in_a_real_browser_answer_first_and_without_a_console_error() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(browser) = browser else {
        assert!(
            std::env::var_os("HERDBENCH_REQUIRE_BROWSER").is_none(),
            "HERDBENCH_REQUIRE_BROWSER is set and no chromium runs (scripts/browser.sh installs it)"
        );
        common::skipped("the HTML report's browser test", "no chromium (scripts/browser.sh installs it)");
        return;
    };
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let dir = temp_dir("html");
    let (markdown, page) = (dir.join("REPORT.md"), dir.join("REPORT.html"));
    std::fs::copy(root.join("REPORT.md"), &markdown).expect("a copy of REPORT.md");
    let guests = root.join("results/runs/guests-1");
    let out = harness(&[
        "report",
        guests.to_str().expect("utf8"),
        "--out",
        dir.join("report").to_str().expect("utf8"),
        "--update",
        markdown.to_str().expect("utf8"),
        "--part",
        "guests",
        "--html",
        page.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(!html.contains("src=\"http") && !html.contains("<link "), "the page fetches nothing");
    let shown = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"])
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}#selftest", page.display()))
        .output()
        .expect("the browser runs");
    let (dom, log) = (String::from_utf8_lossy(&shown.stdout), String::from_utf8_lossy(&shown.stderr));
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let root_tag = dom.lines().find(|l| l.starts_with("<html")).unwrap_or_default();
    assert!(root_tag.contains("data-ready=\"yes\"") && !root_tag.contains("data-errors"), "{root_tag}");
    assert!(root_tag.contains("data-selftest=\"sorted\""), "a table sorted by a click: {root_tag}");
    assert!(root_tag.contains("data-broken-links=\"\""), "every link within the page finds its target: {root_tag}");
    // Every figure of the regenerated guests part is inline.
    let md = std::fs::read_to_string(&markdown).expect("the updated copy");
    let part = md.split("herdbench:begin guests-figures").nth(1).and_then(|p| p.split("herdbench:end").next());
    let regenerated = part.expect("the guests' figures").matches("![").count();
    let inline: usize = root_tag
        .split("data-figures=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .expect("data-figures");
    assert!(regenerated > 0 && inline >= regenerated, "{inline} inline of {regenerated}");
    // The answer first, verdicts marked.
    let first_h2 = dom.split("<h2").nth(1).unwrap_or_default();
    assert!(first_h2.starts_with(" id=\"the-answer"), "the first section: {}", &first_h2[..first_h2.len().min(120)]);
    assert!(dom.contains("<mark class=\"verdict ok\">supported</mark>"), "verdicts marked");
    assert!(dom.contains("<table class=\"sortable\">"), "sortable tables");
    let _ = std::fs::remove_dir_all(dir);
}
