//! The README is a tested contract: its main command and its "Running a tunnel by hand" block
//! run here as printed — from a fresh temporary folder, relative paths, default arguments.
//! The commands are read out of README.md (the blocks marked `<!-- README test: NAME ... -->`),
//! never copied, so the text a user sees and the text that is tested cannot drift apart.
//!
//! `./x test` builds the release binary before the tests run, so `./x scorecard` here only
//! checks that it is up to date; under a bare `cargo test` the first call builds it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The README tests share the machine's two cores and the tunnel block's fixed ports: one at
/// a time, so the scorecard measures only itself.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long one README command may run before the test kills its process group.
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// The body of the fenced code block that follows the marker `<!-- README test: NAME`.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("read README.md");
    block_after_marker(&readme, name)
        .unwrap_or_else(|| panic!("README.md has no code block marked `README test: {name}`"))
}

fn block_after_marker(text: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- README test: {name} ");
    let after = &text[text.find(&marker)?..];
    let fence = after.find("\n```")?;
    let body_start = fence + after[fence + 1..].find('\n')? + 2;
    let body_len = after[body_start..].find("\n```")?;
    Some(after[body_start..body_start + body_len].to_string())
}

/// Run `bash script` in `dir` as its own process group; the whole group (background jobs
/// included) is killed when it ends or runs over `COMMAND_LIMIT`.
fn run_bash(dir: &Path, script: &str, path_prefix: Option<&Path>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(bin) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    let mut child = cmd.spawn().expect("spawn bash");
    let (out, err) = (drain(&mut child, true), drain(&mut child, false));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > COMMAND_LIMIT {
            kill_group(&child);
            panic!("README command ran over {COMMAND_LIMIT:?}:\n{script}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    kill_group(&child);
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn drain(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<Vec<u8>> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("stdout piped"))
    } else {
        Box::new(child.stderr.take().expect("stderr piped"))
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// SIGKILL the process group the script ran in (through kill(1): no unsafe code here).
fn kill_group(child: &Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

fn text(o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The README's main command, with its trailing comment removed.
fn main_command() -> String {
    let block = readme_block("the-two-commands");
    let line = block
        .lines()
        .find(|l| l.contains("scorecard"))
        .expect("the two-commands block names the scorecard");
    let command = line
        .split('#')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(
        command, "./x scorecard",
        "the README's main command changed"
    );
    command
}

/// Checks a scorecard output folder: every backend x workload row, no errors, the chart.
fn check_scorecard_folder(folder: &Path, backends: &[&str]) {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("scorecard.json")).expect("scorecard.json"),
    )
    .expect("scorecard.json is JSON");
    let rows = json["backends"].as_array().expect("backends");
    let names: Vec<&str> = rows.iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, backends);
    for b in rows {
        let results = b["results"].as_array().expect("results");
        assert_eq!(results.len(), 4, "{}: one row per workload", b["name"]);
        for cell in results {
            let what = format!("{} {}", b["name"], cell["workload"]);
            assert_eq!(cell["errors"], 0, "{what}");
            let runs = cell["runs"].as_array().expect("runs");
            assert!(!runs.is_empty(), "{what}: no runs");
            for m in runs {
                let moved = m["ops"].as_u64().unwrap_or(0) + m["bytes"].as_u64().unwrap_or(0);
                assert!(moved > 0, "{what}: nothing measured");
            }
        }
    }
    let svg = std::fs::read_to_string(folder.join("scorecard.svg")).expect("scorecard.svg");
    assert!(svg.starts_with("<svg"), "scorecard.svg is an SVG");
}

/// The folder the scorecard said it wrote (`written: DIR/scorecard.txt, ...`).
fn written_folder(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("written: "))
        .expect("the scorecard prints where it wrote");
    let txt = line.split(',').next().expect("first file").trim();
    Path::new(txt).parent().expect("a folder").to_path_buf()
}

/// `./x scorecard --duration 8s` from a fresh folder holding only a link to `x`, default
/// output folder: it lands in that folder, and holds every row with zero errors.
#[test]
fn readme_main_command_runs_as_printed_from_a_fresh_folder() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let command = main_command();
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(repo().join("x"), dir.path().join("x")).expect("link x");
    let o = run_bash(dir.path(), &format!("{command} --duration 8s"), None);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("Request/response, 1024 B each way, 64 connections"),
        "the table is printed\n{}",
        text(&o)
    );
    let folder = written_folder(&stdout);
    let here = dir.path().canonicalize().expect("canonical tempdir");
    assert_eq!(
        folder
            .parent()
            .map(|p| p.canonicalize().expect("canonical")),
        Some(here),
        "the default output folder is in the folder `./x` was run from"
    );
    let name = folder.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(
        name.starts_with("scorecard-"),
        "default folder name: {name}"
    );
    check_scorecard_folder(&folder, &["plain", "relay", "hbone", "wireguard"]);
}

/// The same script from another working directory, through a relative path to `x`, with a
/// relative `--out`: the folder lands relative to the caller, and the HBONE node and proxy
/// (whose configs name key folders) start.
#[test]
fn scorecard_from_another_folder_with_relative_out() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("elsewhere");
    std::fs::create_dir(&work).expect("mkdir");
    std::os::unix::fs::symlink(repo(), dir.path().join("fipstun")).expect("link the repo");
    let o = run_bash(
        &work,
        "../fipstun/x scorecard --duration 2s --backends hbone --out results/card --no-progress",
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    check_scorecard_folder(&work.join("results/card"), &["hbone"]);
}

/// The "Running a tunnel by hand" block, run as printed in a fresh folder with the binary on
/// `PATH`: CA and SVIDs, a web server, node and proxy, curl and wrk through the tunnel, a
/// metrics scrape, then SIGTERM — after which node and proxy must exit 0.
#[test]
fn readme_tunnel_by_hand_runs_as_printed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let block = readme_block("tunnel-by-hand");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Path::new(env!("CARGO_BIN_EXE_fipstun"))
        .parent()
        .expect("binary folder");
    // Jobs as the block starts them: %1 the web server, %2 the node, %3 the proxy. Their PIDs
    // are noted just before the block's last line (the SIGTERM), so their exit codes can be
    // read afterwards; job numbers are gone once bash has reaped a job.
    let (body, last) = block
        .trim_end()
        .rsplit_once('\n')
        .expect("the block has several lines");
    assert!(
        last.starts_with("kill -TERM"),
        "the block ends with the SIGTERM: {last}"
    );
    let script = format!(
        "set -euo pipefail\n{body}\n\
         node_pid=$(jobs -p %2); proxy_pid=$(jobs -p %3)\n\
         {last}\n\
         node=0; wait \"$node_pid\" || node=$?\n\
         proxy=0; wait \"$proxy_pid\" || proxy=$?\n\
         echo \"README-TEST node-exit=$node proxy-exit=$proxy\"\n\
         kill %1\n\
         wait\n"
    );
    let o = run_bash(dir.path(), &script, Some(bin));
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stdout.contains("Directory listing for /"),
        "curl got the web server's page through the tunnel\n{all}"
    );
    assert!(stdout.contains("Requests/sec:"), "wrk ran\n{all}");
    assert!(
        !stdout.contains("Non-2xx") && !stdout.contains("Socket errors"),
        "wrk saw no errors\n{all}"
    );
    let streams: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fipstun_streams_total{backend=\"hbone\"} "))
        .unwrap_or_else(|| panic!("the metrics scrape shows HBONE streams\n{all}"))
        .trim()
        .parse()
        .expect("a number");
    assert!(streams >= 2.0, "curl and wrk went through the node\n{all}");
    assert!(stderr.contains("fipstun node: ready"), "{all}");
    assert!(stderr.contains("fipstun proxy: ready"), "{all}");
    assert!(
        stdout.contains("README-TEST node-exit=0 proxy-exit=0"),
        "node and proxy drain and exit 0 on SIGTERM\n{all}"
    );
}

/// The "Running fipstun in ztunnel's place" block, run as printed in a fresh folder with the
/// binary on `PATH`: `fipstun ca serve` as istiod's CA API, node and proxy taking their SVIDs
/// from it (TOML only), the readiness probe, SOCKS5 through HBONE, `/config_dump` showing the
/// SVID, the SVID expiry gauge, then SIGTERM — after which node and proxy must exit 0.
#[test]
fn readme_ztunnel_slot_runs_as_printed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let block = readme_block("ztunnel-slot");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Path::new(env!("CARGO_BIN_EXE_fipstun"))
        .parent()
        .expect("binary folder");
    // Jobs as the block starts them: %1 the CA server, %2 the web server, %3 the node, %4 the
    // proxy; their PIDs are noted before the block's last line (the SIGTERM).
    let (body, last) = block
        .trim_end()
        .rsplit_once('\n')
        .expect("the block has several lines");
    assert!(
        last.starts_with("kill -TERM"),
        "the block ends with the SIGTERM: {last}"
    );
    let script = format!(
        "set -euo pipefail\n{body}\n\
         node_pid=$(jobs -p %3); proxy_pid=$(jobs -p %4)\n\
         {last}\n\
         node=0; wait \"$node_pid\" || node=$?\n\
         proxy=0; wait \"$proxy_pid\" || proxy=$?\n\
         echo \"README-TEST node-exit=$node proxy-exit=$proxy\"\n\
         kill %1 %2\n\
         wait\n"
    );
    let o = run_bash(dir.path(), &script, Some(bin));
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stdout.lines().any(|l| l == "ready"),
        "the readiness probe answered 200 ready\n{all}"
    );
    assert!(stdout.contains("through SOCKS5 and HBONE: 200"), "{all}");
    assert!(
        stdout.contains("spiffe://cluster.local/ns/default/sa/proxy"),
        "/config_dump shows the proxy's SVID\n{all}"
    );
    let expiry: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fipstun_svid_expiry_seconds"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("the SVID expiry gauge\n{all}"))
        .trim()
        .parse()
        .expect("a number");
    assert!(
        expiry > 60.0,
        "a fresh SVID from the CA server: {expiry} s left\n{all}"
    );
    assert!(stderr.contains("SVID from the Istio CA"), "{all}");
    // The proxy's access log line for the SOCKS5 stream, as JSON with ztunnel's field names.
    let access = stderr
        .lines()
        .find(|l| l.starts_with('{') && l.contains("fipstun::access"))
        .unwrap_or_else(|| panic!("no JSON access log line\n{all}"));
    let v: serde_json::Value = serde_json::from_str(access).expect("JSON");
    let fields = &v["fields"];
    assert_eq!(fields["direction"], "outbound", "{access}");
    assert!(fields["bytes_recv"].as_u64().unwrap_or(0) > 0, "{access}");
    assert!(
        fields["src.addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{access}"
    );
    assert!(
        stdout.contains("README-TEST node-exit=0 proxy-exit=0"),
        "node and proxy drain and exit 0 on SIGTERM\n{all}"
    );
}

#[test]
fn block_extraction_finds_the_fenced_body() {
    let md = "x\n<!-- README test: a (note) -->\n```sh\none\ntwo\n```\n<!-- README test: b -->\n";
    assert_eq!(block_after_marker(md, "a").as_deref(), Some("one\ntwo"));
    assert_eq!(block_after_marker(md, "b"), None);
    assert_eq!(block_after_marker(md, "c"), None);
}
