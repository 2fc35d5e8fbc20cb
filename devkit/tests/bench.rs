//! `warden-dev bench` end to end: the real binaries (`warden-dev`, and the
//! `warden` it runs as worker processes) against the real broker. No timing
//! is asserted here; performance figures come from the bench itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use warden::Settings;

/// The `warden` binary of this build, beside `warden-dev`, built first:
/// `cargo test -p warden-devkit` builds this package's binaries only, and the
/// bench runs warden's (a no-op when it is up to date).
fn warden_bin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_warden-dev"))
            .parent()
            .expect("warden-dev is in a profile directory");
        let target_dir = profile_dir.parent().expect("in a target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "warden", "--bin", "warden"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile_dir.file_name().and_then(|p| p.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin warden: {status}");
        profile_dir.join("warden")
    })
}

/// Runs `warden-dev` to completion with `args`, returning (code, stdout, stderr).
fn warden_dev(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden-dev"))
        .args(args)
        .env("WARDEN_BIN", warden_bin())
        .env_remove("WARDEN_CONFIG")
        .env("WARDEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,lapin=off")
        .output()
        .expect("run warden-dev");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The broker the bench used: the same settings, from the same environment.
async fn connect() -> lapin::Connection {
    let settings = Settings::load(None).expect("settings");
    warden::amqp::broker::connect(&settings, "bench-test", Duration::from_secs(5))
        .await
        .expect("broker")
}

fn rows<'a>(report: &'a Value, scenario: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["scenario"] == scenario)
        .collect()
}

async fn queue_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    warden::amqp::topology::inspect(&ch, name).await.is_ok()
}

async fn exchange_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn a_small_bench_reports_positive_rates_and_ratios_and_deletes_its_prefix() {
    let (code, stdout, stderr) = warden_dev(&[
        "bench",
        "--n",
        "2000",
        "--scenarios",
        "drain,baseline",
        "--json",
    ]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(report["n"], 2000);
    assert_eq!(
        report["leftovers"],
        serde_json::json!([]),
        "every drain acked all"
    );
    assert_eq!(
        report["scenarios"],
        serde_json::json!(["drain", "baseline"])
    );

    let drain = rows(&report, "drain");
    // Concurrency 1, 16, 64, 256, each with events off and on.
    assert_eq!(drain.len(), 8, "{drain:#?}");
    for r in &drain {
        assert!(r["value"]["median"].as_f64().unwrap() > 0.0, "{r:#}");
        assert!(r["ratio"]["median"].as_f64().unwrap() > 0.0, "{r:#}");
        assert_eq!(r["ratio_to"], "ceiling");
        assert_eq!(r["unit"], "msg/s");
    }
    let baseline = rows(&report, "baseline");
    // The ceiling, the coalescing raw consumer, the naive one, and the one
    // publishing a confirmed event per message (the events-on bound).
    assert_eq!(baseline.len(), 4, "{baseline:#?}");
    assert!(
        baseline.iter().any(|r| r["variant"]
            .as_str()
            .unwrap()
            .contains("one confirmed event per message")
            && r["ratio"]["median"].as_f64().unwrap() > 0.0),
        "{baseline:#?}"
    );
    assert!(
        baseline
            .iter()
            .all(|r| r["value"]["median"].as_f64().unwrap() > 0.0)
    );
    assert_eq!(
        baseline.iter().filter(|r| r["ratio"].is_null()).count(),
        1,
        "only the ceiling itself has no ratio"
    );

    let prefix = report["prefix"].as_str().unwrap();
    assert!(prefix.starts_with("bench-"), "{prefix}");
    let conn = connect().await;
    for q in ["tasks", "dead", "parked", "reauth", "bench-events"] {
        assert!(
            !queue_exists(&conn, &format!("{prefix}.{q}")).await,
            "queue {prefix}.{q} is still there"
        );
    }
    for x in ["tasks", "delay", "dead", "events", "tokens"] {
        assert!(
            !exchange_exists(&conn, &format!("{prefix}.{x}")).await,
            "exchange {prefix}.{x} is still there"
        );
    }
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let (code, _, stderr) = warden_dev(&["bench", "--scenarios", "drain,nonsense"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nonsense"), "{stderr}");
}

#[tokio::test]
async fn the_reauth_bench_times_a_cold_and_a_warm_heal_from_the_first_401() {
    let (code, stdout, stderr) = warden_dev(&[
        "bench",
        "--scenarios",
        "reauth",
        "--reauth-runs",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let reauth = rows(&report, "reauth");
    let figure = |variant: &str, metric: &str| {
        reauth
            .iter()
            .find(|r| r["variant"].as_str().unwrap().starts_with(variant) && r["metric"] == metric)
            .unwrap_or_else(|| panic!("{variant} {metric}: {reauth:#?}"))["value"]["median"]
            .as_f64()
            .unwrap()
    };
    for variant in ["cold", "warm"] {
        let stored = figure(variant, "first 401 → token stored");
        let done = figure(variant, "first 401 → parked task done");
        let handled = figure(variant, "of which warden reauth handling");
        // A browser login takes a while; the task runs only after the token
        // is stored, and the re-auth handling is part of the time to store.
        assert!(handled > 50.0, "{variant}: {handled} ms");
        assert!(handled <= stored + 1.0, "{variant}: {handled} > {stored}");
        assert!(stored <= done, "{variant}: {stored} > {done}");
    }
    let prefix = report["prefix"].as_str().unwrap();
    let conn = connect().await;
    for q in ["tasks", "parked", "reauth"] {
        assert!(
            !queue_exists(&conn, &format!("{prefix}.{q}")).await,
            "queue {prefix}.{q} is still there"
        );
    }
}

#[tokio::test]
async fn the_tracing_scenario_exports_every_run_with_export_on_and_compares_it_with_export_off() {
    let (code, stdout, stderr) =
        warden_dev(&["bench", "--n", "2000", "--scenarios", "tracing", "--json"]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let tracing = rows(&report, "tracing");
    let on = |metric: &str| {
        tracing
            .iter()
            .find(|r| r["variant"].as_str().unwrap().contains("export on") && r["metric"] == metric)
            .unwrap_or_else(|| panic!("{metric}: {tracing:#?}"))
    };
    // Spans really left the worker: a few hundred bytes of OTLP per task.
    assert!(
        on("OTLP bytes per task")["value"]["median"]
            .as_f64()
            .unwrap()
            > 100.0
    );
    let rate = on("drain rate");
    assert_eq!(rate["ratio_to"], "export off");
    assert!(rate["ratio"]["median"].as_f64().unwrap() > 0.0, "{rate:#}");
    let off = tracing
        .iter()
        .find(|r| r["variant"].as_str().unwrap().ends_with("export off"))
        .expect("the export-off runs");
    // Two export-off runs around the export-on one.
    assert_eq!(off["value"]["samples"].as_array().unwrap().len(), 2);
}
