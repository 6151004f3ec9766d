//! WebSocket conformance: Autobahn's fuzzingclient cases 1–7, 9, 10, 12 and 13 (run by
//! `kosoku` from PyPI, the Python 3 runner of Autobahn's cases) against a plain Node
//! `ws` echo server with permessage-deflate, once directly and once through the
//! gateway. No case may fare worse through the gateway than directly.
//!
//! Of the compression cases (12 and 13) the first nine of every group run: messages of
//! 16 B to 64 KiB, compressed and fragmented every way the groups define. Cases 10–18
//! of each group repeat the same frames with 128 KiB messages and fragment sizes up to
//! 128 KiB; on two cores the Node echo server's deflate needs about four minutes per
//! run for them, and on a loaded CI machine some exceeded the runner's 480 s per-case
//! limit (a timing failure, directly and through the gateway alike). Large frames and
//! messages are covered uncompressed by cases 9.* (up to 16 MiB).
//!
//! No case may fail (`FAILED`) directly, and every case fares as well through the
//! gateway as directly, strictness included (a case `OK` directly may not be
//! `NON-STRICT` through the gateway). kosoku 0.1.0 itself raises on 12 cases of
//! 13.x (`behavior=ERROR`, "Strings must be encoded before hashing": a Python 2 `str`
//! left where `bytes` is needed); those are errors of the runner, counted and reported
//! apart, and must be the same directly and through the gateway.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use support::*;

const CASES: [&str; 11] = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"];

/// Runs the cases against `address` (`host:port/path`): (cases run, ids of the cases
/// that failed, ids of those where the runner itself raised).
async fn kosoku(address: &str, out: &std::path::Path) -> (usize, BTreeSet<String>, BTreeSet<String>) {
    let mut cmd = tokio::process::Command::new("kosoku");
    for c in CASES {
        cmd.args(["-i", c]);
    }
    // kosoku's globs know `*` only: name the heavy compression cases one by one.
    for group in ["12.1", "12.2", "12.3", "12.4", "12.5", "13.1", "13.2", "13.3", "13.4", "13.5", "13.6", "13.7"] {
        for case in 10..=18 {
            cmd.args(["-x".to_string(), format!("{group}.{case}")]);
        }
    }
    let output =
        cmd.args(["-p", "16", "-o"]).arg(out).arg(address).output().await.expect("kosoku (pip install kosoku)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("wrote reports for ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("unexpected kosoku output:\n{text}"));
    let mut failed = BTreeSet::new();
    let mut errors = BTreeSet::new();
    for l in text.lines().filter(|l| l.starts_with("  ") && l.contains("behavior=")) {
        let id = l.trim().split(':').next().unwrap_or_default().to_string();
        if l.contains("behavior=ERROR") {
            errors.insert(id)
        } else {
            failed.insert(id)
        };
    }
    println!("{address}: {total} cases\n{text}");
    (total, failed, errors)
}

/// Each case's (behavior, behaviorClose) from the runner's JSON reports in `dir`.
fn reports(dir: &std::path::Path) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the runner's reports") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).expect("read")) else {
            continue;
        };
        if let (Some(id), Some(b), Some(c)) = (v["id"].as_str(), v["behavior"].as_str(), v["behaviorClose"].as_str()) {
            out.insert(id.to_string(), (b.to_string(), c.to_string()));
        }
    }
    out
}

/// How bad an outcome is: OK and INFORMATIONAL (nothing judged) 0, UNIMPLEMENTED 1,
/// NON-STRICT 2, anything else (FAILED, FAILED BY CLIENT, WRONG CODE…) 3; the worse
/// of behavior and behaviorClose.
fn rank((behavior, close): &(String, String)) -> u8 {
    let one = |s: &str| match s {
        "OK" | "INFORMATIONAL" => 0,
        "UNIMPLEMENTED" => 1,
        "NON-STRICT" => 2,
        _ => 3,
    };
    one(behavior).max(one(close))
}

#[tokio::test]
async fn autobahn_cases_fare_no_worse_through_the_gateway() {
    let (_echo, port) = plain_echo().await;

    let gw = gateway(&format!(
        r#"
backends: [ {{ system_name: echo, private_base_url: "ws://127.0.0.1:{port}" }} ]
products:
  - system_name: conformance
    staging_public_base_url: http://127.0.0.1
    production_public_base_url: http://localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain: [ {{ name: websocket }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: a
    applications: [ {{ name: app, product: conformance, plan: basic, user_key: k }} ]
"#
    ))
    .await;
    let dir = TempDir::new();
    let (direct_total, direct_failed, direct_errors) =
        kosoku(&format!("127.0.0.1:{port}/"), &dir.path().join("direct")).await;
    let (gw_total, _, gw_errors) =
        kosoku(&format!("127.0.0.1:{}/?user_key=k", gw.server.staging.port()), &dir.path().join("gateway")).await;
    assert!(gw_total >= 400, "the cases ran: {gw_total}");
    assert_eq!(gw_total, direct_total);
    assert!(direct_failed.is_empty(), "cases that failed directly (the echo server): {direct_failed:?}");
    assert_eq!(gw_errors, direct_errors, "the runner's own errors differ between the two runs");

    // Strict parity: every case no worse through the gateway than directly — a case
    // that is OK directly must be OK through the gateway (not NON-STRICT, not FAILED).
    let direct = reports(&dir.path().join("direct"));
    let mut through = reports(&dir.path().join("gateway"));
    let worse = |through: &BTreeMap<String, (String, String)>| -> Vec<String> {
        direct
            .iter()
            .filter(|(id, d)| !gw_errors.contains(*id) && through.get(*id).is_some_and(|g| rank(g) > rank(d)))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let first = worse(&through);
    // The runner judges closing handshakes against timeouts of about a second; sixteen
    // cases at a time on a loaded two-core machine can miss one (`FAILED BY CLIENT`)
    // either way. Such a case runs once more, alone, and must then be as good.
    if !first.is_empty() {
        println!("cases worse through the gateway in the parallel run, run again alone: {first:?}");
        let again = dir.path().join("again");
        let address = format!("127.0.0.1:{}/?user_key=k", gw.server.staging.port());
        let mut cmd = tokio::process::Command::new("kosoku");
        for id in &first {
            cmd.args(["-i", id]);
        }
        let out = cmd.args(["-p", "1", "-o"]).arg(&again).arg(&address).output().await.expect("kosoku");
        assert!(out.status.success() || !out.stdout.is_empty(), "kosoku: {}", String::from_utf8_lossy(&out.stderr));
        through.extend(reports(&again));
    }
    let worse = worse(&through);
    let describe: Vec<String> = worse
        .iter()
        .map(|id| format!("{id}: directly {:?}, through the gateway {:?}", direct[id], through[id]))
        .collect();
    assert!(worse.is_empty(), "cases that fare worse through the gateway:\n{}", describe.join("\n"));
    println!(
        "autobahn: {gw_total} cases, 0 failed through the gateway and directly; {} the runner could not run (both ways)",
        gw_errors.len()
    );
}
