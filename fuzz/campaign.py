#!/usr/bin/env python3
"""The fuzzing campaign behind FUZZING.md (`./x fuzz-campaign [minutes] [--targets a,b]`).

For every target (or those named): run it for the set time on one core (stable toolchain,
--sanitizer none) on fuzz/corpus/<target>, recording executions, executions per second, new
crash artifacts and the corpus before and after; minimise the corpus with `cargo fuzz cmin`
and give the surviving entries committable names (seed-<sha1 prefix>); measure line and
branch coverage of the modules the target parses with `cargo fuzz coverage` and the
toolchain's llvm-cov; then rewrite the generated part of FUZZING.md from all recorded
results (fuzz/campaign-results.json keeps the rows of targets not run this time).

Standard library only. `--self-test` checks the parsers and the report writer on fixed
inputs and exits.
"""

import argparse
import datetime
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"
RESULTS = FUZZ / "campaign-results.json"
REPORT = REPO / "FUZZING.md"
TRIPLE = "x86_64-unknown-linux-gnu"
# The bar: every target at least this many executions in a 10-minute run.
TEN_MINUTE_EXECUTIONS = 10_000_000
BEGIN = "<!-- campaign:begin (written by fuzz/campaign.py; edits inside are lost) -->"
END = "<!-- campaign:end -->"

# What each target parses, and the source files that parsing lives in (glob patterns on
# the absolute path, matched against llvm-cov's file list; third-party crates by their
# registry directory). Coverage is reported over exactly these files.
TARGETS = {
    "spiffe_id": ("SPIFFE ID strings", ["*/identity/src/spiffe.rs"]),
    "trust_domain": ("trust domain names", ["*/identity/src/spiffe.rs"]),
    "spiffe_id_differential": (
        "SPIFFE IDs and trust domains, ours vs the spiffe crate",
        ["*/identity/src/spiffe.rs", "*/spiffe-0.*/src/spiffe_id/mod.rs"],
    ),
    "svid_der": ("X.509-SVID chains (DER)", ["*/identity/src/svid.rs"]),
    "csr_sign": ("PKCS#10 CSRs into the CA", ["*/identity/src/ca.rs", "*/identity/src/keys.rs"]),
    "pem_bundle": ("trust bundles (PEM)", ["*/identity/src/bundle.rs"]),
    "private_key": ("private keys (PKCS#8 DER, PEM)", ["*/identity/src/keys.rs"]),
    "tls_server": (
        "TLS bytes into our FIPS server",
        ["*/identity/src/tls.rs", "*/identity/src/svid.rs", "*/rustls-0.23.*/src/msgs/*",
         "*/rustls-0.23.*/src/server/*"],
    ),
    "tls_client": (
        "TLS bytes into our FIPS client",
        ["*/identity/src/tls.rs", "*/identity/src/svid.rs", "*/rustls-0.23.*/src/msgs/*",
         "*/rustls-0.23.*/src/client/*"],
    ),
    "tls_record_mutation": (
        "a FIPS handshake with records mutated in flight",
        ["*/identity/src/tls.rs", "*/identity/src/svid.rs", "*/rustls-0.23.*/src/msgs/*",
         "*/rustls-0.23.*/src/server/*", "*/rustls-0.23.*/src/client/*",
         "*/rustls-0.23.*/src/record_layer.rs"],
    ),
    "hbone_connect": (
        "HBONE CONNECT heads and their headers",
        ["*/hbone/src/wire.rs", "*/transport/src/target.rs"],
    ),
    "hbone_session": (
        "whole HTTP/2 sessions into the HBONE server",
        ["*/hbone/src/server.rs", "*/hbone/src/wire.rs", "*/hbone/src/stream.rs",
         "*/h2-0.4.*/src/frame/*", "*/h2-0.4.*/src/hpack/*", "*/h2-0.4.*/src/proto/*",
         "*/h2-0.4.*/src/server.rs"],
    ),
    "wireguard_datagram": (
        "WireGuard datagrams and tunnelled packets",
        ["*/wireguard/src/lib.rs", "*/gotatun-0.*/src/packet/*", "*/gotatun-0.*/src/noise/*"],
    ),
    "wireguard_handshake": (
        "WireGuard handshakes with valid MACs",
        ["*/gotatun-0.*/src/noise/handshake.rs", "*/gotatun-0.*/src/noise/rate_limiter.rs",
         "*/gotatun-0.*/src/noise/mod.rs", "*/gotatun-0.*/src/packet/wg.rs"],
    ),
    "planes_authority": ("Workload API HTTP/2 :authority rewriting", ["*/planes/src/authority.rs"]),
    "planes_response": ("Workload API / Istio CA responses", ["*/planes/src/response.rs"]),
    "socks5_request": ("SOCKS5 greetings and requests", ["*/transport/src/socks5.rs"]),
}


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def cargo_env():
    env = dict(os.environ)
    env.setdefault("AWS_LC_FIPS_SYS_USE_SYSTEM", "0")
    return env


def target_dir():
    d = os.environ.get("CARGO_TARGET_DIR")
    if not d:
        return FUZZ / "target"
    p = Path(d)
    return p if p.is_absolute() else REPO / p


# ---------------------------------------------------------------------------------------
# Parsing what the tools print
# ---------------------------------------------------------------------------------------

STAT = re.compile(r"^stat::(\w+):\s+(\d+)\s*$", re.M)


def parse_stats(text):
    """libFuzzer's -print_final_stats=1 lines (stat::name: value) as a dict of ints."""
    return {name: int(value) for name, value in STAT.findall(text)}


def summarise_coverage(export, patterns):
    """Sums llvm-cov export's per-file summaries over the files matching `patterns`.

    Returns lines/branches/regions as [covered, total] and the matched file names."""
    out = {"lines": [0, 0], "branches": [0, 0], "regions": [0, 0], "files": []}
    for data in export.get("data", []):
        for f in data.get("files", []):
            name = f.get("filename", "")
            if not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            out["files"].append(name)
            s = f.get("summary", {})
            for key in ("lines", "branches", "regions"):
                out[key][0] += s.get(key, {}).get("covered", 0)
                out[key][1] += s.get(key, {}).get("count", 0)
    return out


def corpus_size(path):
    files = [p for p in Path(path).iterdir() if p.is_file()] if Path(path).is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def artifacts(target):
    d = FUZZ / "artifacts" / target
    return {p.name for p in d.iterdir() if p.is_file()} if d.is_dir() else set()


# ---------------------------------------------------------------------------------------
# The campaign
# ---------------------------------------------------------------------------------------


def list_targets():
    out = subprocess.run(["cargo", "fuzz", "list"], cwd=FUZZ, env=cargo_env(),
                         check=True, capture_output=True, text=True).stdout
    return [t for t in out.split() if t]


def run_target(target, seconds, logs):
    corpus = FUZZ / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    before = corpus_size(corpus)
    known = artifacts(target)
    say(f"fuzz {target} for {seconds} s (corpus: {before[0]} entries, {before[1]} bytes)")
    cmd = ["cargo", "fuzz", "run", "--sanitizer", "none", target, str(corpus), "--",
           f"-max_total_time={seconds}", "-print_final_stats=1", "-rss_limit_mb=4096"]
    started = datetime.datetime.now()
    proc = subprocess.run(cmd, cwd=FUZZ, env=cargo_env(), capture_output=True, text=True)
    elapsed = (datetime.datetime.now() - started).total_seconds()
    log = logs / f"{target}.log"
    log.write_text(proc.stdout + proc.stderr)
    stats = parse_stats(proc.stderr + proc.stdout)
    crashes = sorted(artifacts(target) - known)
    if proc.returncode != 0 and not crashes:
        say(f"{target}: exit {proc.returncode} without a new artifact; see {log}")
    return {
        "what": TARGETS.get(target, ("(not described in fuzz/campaign.py)", []))[0],
        "seconds": seconds,
        "wall_seconds": round(elapsed),
        "executions": stats.get("number_of_executed_units", 0),
        "exec_per_sec": stats.get("average_exec_per_sec", 0),
        "new_units": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "crashes": crashes,
        "exit_code": proc.returncode,
        "corpus_before": list(before),
        "corpus_after_run": list(corpus_size(corpus)),
    }


def seed_name(data):
    return "seed-" + hashlib.sha1(data).hexdigest()[:16]


def name_seeds(corpus):
    """Gives every entry not yet named seed-* the name seed-<sha1 prefix> (dropping exact
    duplicates), so git commits the minimised corpus."""
    seen = set()
    for p in sorted(Path(corpus).iterdir()):
        if not p.is_file():
            continue
        data = p.read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            p.unlink()
            continue
        seen.add(digest)
        if not p.name.startswith("seed-"):
            dest = p.with_name(seed_name(data))
            if dest.exists():
                p.unlink()
            else:
                p.rename(dest)


def minimise(target, logs):
    corpus = FUZZ / "corpus" / target
    say(f"minimise {target} (cargo fuzz cmin)")
    proc = subprocess.run(["cargo", "fuzz", "cmin", "--sanitizer", "none", target, str(corpus)],
                          cwd=FUZZ, env=cargo_env(), capture_output=True, text=True)
    (logs / f"{target}.cmin.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        say(f"{target}: cmin failed (exit {proc.returncode}); corpus left as it was")
    name_seeds(corpus)
    return list(corpus_size(corpus))


def llvm_tool(name):
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], check=True, capture_output=True,
                             text=True).stdout.strip()
    hits = glob.glob(f"{sysroot}/lib/rustlib/*/bin/{name}")
    if not hits:
        raise SystemExit(f"{name} not found: rustup component add llvm-tools")
    return hits[0]


def coverage(target, logs, branch_toolchain):
    """Line and branch coverage of the target's modules over its (minimised) corpus.

    Stable rustc instruments lines and regions only; branch counters need
    `-Z coverage-options=branch`, so with `branch_toolchain` (e.g. nightly) the coverage
    build uses that toolchain with the flag, and llvm-cov still comes from the default one."""
    corpus = FUZZ / "corpus" / target
    say(f"coverage of {target} (cargo fuzz coverage{', ' + branch_toolchain if branch_toolchain else ''})")
    env = cargo_env()
    cmd = ["cargo", "fuzz", "coverage", "--sanitizer", "none", target, str(corpus)]
    if branch_toolchain:
        cmd.insert(1, f"+{branch_toolchain}")
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " -Zcoverage-options=branch").strip()
    raw = FUZZ / "coverage" / target / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    proc = subprocess.run(cmd, cwd=FUZZ, env=env, capture_output=True, text=True)
    (logs / f"{target}.coverage.log").write_text(proc.stdout + proc.stderr)
    # Merge the raw profiles with the default toolchain's llvm-profdata ourselves: cargo fuzz
    # looks for the building toolchain's llvm-tools, which nightly here does not have (its
    # LLVM is the same major version, so the formats agree).
    profdata = FUZZ / "coverage" / target / "coverage.profdata"
    profraws = sorted(str(p) for p in raw.glob("*.profraw")) if raw.is_dir() else []
    if profraws:
        merged = subprocess.run([llvm_tool("llvm-profdata"), "merge", "-sparse", *profraws,
                                 "-o", str(profdata)], capture_output=True, text=True)
        if merged.returncode == 0:
            proc = merged
    # cargo fuzz coverage builds under fuzz/target whatever CARGO_TARGET_DIR says.
    candidates = [d / TRIPLE / "coverage" / TRIPLE / "release" / target
                  for d in (FUZZ / "target", target_dir())]
    binary = next((b for b in candidates if b.exists()), candidates[0])
    if proc.returncode != 0 or not profdata.exists() or not binary.exists():
        say(f"{target}: no coverage (exit {proc.returncode}); see {logs}")
        return None
    export = subprocess.run([llvm_tool("llvm-cov"), "export", "-summary-only",
                             f"-instr-profile={profdata}", str(binary)],
                            capture_output=True, text=True)
    if export.returncode != 0:
        say(f"{target}: llvm-cov export failed: {export.stderr.strip()[:200]}")
        return None
    patterns = TARGETS.get(target, ("", []))[1]
    summary = summarise_coverage(json.loads(export.stdout), patterns)
    summary["files"] = sorted(os.path.relpath(f, REPO) if f.startswith(str(REPO))
                              else re.sub(r".*/registry/src/[^/]+/", "", f)
                              for f in summary["files"])
    return summary


# ---------------------------------------------------------------------------------------
# FUZZING.md
# ---------------------------------------------------------------------------------------


def pct(pair):
    covered, total = pair
    return f"{100 * covered / total:.1f}% ({covered}/{total})" if total else "n/a"


def branch_cell(cov):
    """Branches when the build counted them; otherwise regions, the closest stable measure
    (llvm's code regions: each arm of a branch is its own region), named as such."""
    if cov.get("branches", [0, 0])[1]:
        return pct(cov["branches"])
    if cov.get("regions", [0, 0])[1]:
        return f"n/a; regions {pct(cov['regions'])}"
    return "n/a"


def human(n):
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} M"
    if n >= 1_000:
        return f"{n / 1_000:.0f} k"
    return str(n)


def generated_block(results, toolchain_note):
    rows = [
        "| target | what it parses | minutes | executions | exec/s | corpus entries / bytes "
        "(minimised) | crashes | line coverage | branch coverage |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    short = []
    for target in sorted(results):
        r = results[target]
        cov = r.get("coverage") or {}
        entries, size = r.get("corpus_minimised", r.get("corpus_after_run", [0, 0]))
        minutes = r["seconds"] / 60
        rows.append(
            f"| `{target}` | {r['what']} | {minutes:g} | {human(r['executions'])} | "
            f"{r['exec_per_sec']:,} | {entries} / {size:,} | {len(r['crashes'])} | "
            f"{pct(cov.get('lines', [0, 0]))} | {branch_cell(cov)} |"
        )
        # The bar is 10 M in 10 minutes: judge shorter runs by their rate.
        projected = r["exec_per_sec"] * 600
        if projected < TEN_MINUTE_EXECUTIONS:
            short.append(
                f"- `{target}`: {human(r['executions'])} executions in {minutes:g} min "
                f"({r['exec_per_sec']:,}/s, {human(projected)} per 10 min): under 10 M."
            )
    lines = [BEGIN, "", "## Results", ""]
    runs = sorted({r["date"] for r in results.values()})
    lines.append(f"Runs: {', '.join(runs)}. {toolchain_note}")
    lines += ["", *rows, ""]
    crashes = [(t, c) for t in sorted(results) for c in results[t]["crashes"]]
    if crashes:
        lines += ["Crash inputs (fuzz/artifacts/<target>/):", ""]
        lines += [f"- `{t}`: `{c}`" for t, c in crashes]
        lines.append("")
    if short:
        lines += ["Targets under 10 M executions per 10 minutes:", "", *short, ""]
    lines += ["Modules each coverage figure is over:", ""]
    for target in sorted(results):
        files = (results[target].get("coverage") or {}).get("files") or []
        lines.append(f"- `{target}`: {', '.join(f'`{f}`' for f in files) or '(none measured)'}")
    lines += ["", END]
    return "\n".join(lines)


def write_report(results, path, toolchain_note, template):
    block = generated_block(results, toolchain_note)
    text = path.read_text() if path.exists() else template
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


TEMPLATE = """# Fuzzing fipstun

Every parser of untrusted bytes has a cargo-fuzz target in `fuzz/`. `./x fuzz-campaign
[minutes-per-target] [--targets a,b] [--jobs N]` runs them (one core each, stable toolchain, `--sanitizer
none`: AWS-LC's FIPS build rejects ASan objects), minimises the corpora, measures coverage and
rewrites the results below; `./x test` runs each target for 15 s from the committed corpora.
"""


# ---------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------


def self_test():
    stats = parse_stats(
        "#123\tDONE   cov: 10 ft: 20\n"
        "stat::number_of_executed_units: 12894060\n"
        "stat::average_exec_per_sec:     211378\n"
        "stat::new_units_added:          2491\n"
        "stat::slowest_unit_time_sec:    0\n"
        "not a stat::line: x\n"
    )
    assert stats == {"number_of_executed_units": 12894060, "average_exec_per_sec": 211378,
                     "new_units_added": 2491, "slowest_unit_time_sec": 0}, stats
    export = {"data": [{"files": [
        {"filename": "/r/identity/src/spiffe.rs", "summary": {
            "lines": {"count": 10, "covered": 7}, "branches": {"count": 4, "covered": 1},
            "regions": {"count": 12, "covered": 6}}},
        {"filename": "/r/identity/src/ca.rs", "summary": {
            "lines": {"count": 99, "covered": 99}}},
    ]}]}
    cov = summarise_coverage(export, ["*/identity/src/spiffe.rs"])
    assert cov["lines"] == [7, 10] and cov["branches"] == [1, 4], cov
    assert cov["files"] == ["/r/identity/src/spiffe.rs"]
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d)
        (corpus / "abc").write_bytes(b"x")
        (corpus / "dup").write_bytes(b"x")
        (corpus / "seed-kept").write_bytes(b"y")
        name_seeds(corpus)
        assert sorted(p.name for p in corpus.iterdir()) == sorted([seed_name(b"x"),
                                                                  "seed-kept"])
        results = {
            "fast": {"what": "a", "seconds": 60, "executions": 12_000_000,
                     "exec_per_sec": 200_000, "crashes": [], "date": "2026-01-01",
                     "corpus_minimised": [3, 30],
                     "coverage": {"lines": [7, 10], "branches": [0, 0], "files": ["f.rs"]}},
            "slow": {"what": "b", "seconds": 60, "executions": 42_000, "exec_per_sec": 700,
                     "crashes": ["crash-1"], "date": "2026-01-01"},
        }
        report = corpus / "FUZZING.md"
        report.write_text("# Title\n\nhand-written\n\n" + BEGIN + "\nold\n" + END
                          + "\n\n## Kept\n")
        write_report(results, report, "note", TEMPLATE)
        text = report.read_text()
        assert "hand-written" in text and "## Kept" in text and "old" not in text, text
        assert "| `fast` | a | 1 | 12.0 M | 200,000 | 3 / 30 | 0 | 70.0% (7/10) | n/a |" in text
        assert branch_cell({"branches": [1, 4]}) == "25.0% (1/4)"
        assert branch_cell({"branches": [0, 0], "regions": [1, 2]}) == "n/a; regions 50.0% (1/2)"
        assert "`slow`: 42 k executions in 1 min (700/s, 420 k per 10 min): under 10 M." in text
        assert "`fast`: " not in text.split("under 10 M executions")[1].split("Modules")[0]
        assert "- `slow`: `crash-1`" in text
    print("campaign.py self-test: ok")


# ---------------------------------------------------------------------------------------


def default_branch_toolchain():
    out = subprocess.run(["rustup", "toolchain", "list"], capture_output=True, text=True)
    return "nightly" if re.search(r"^nightly", out.stdout, re.M) else "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("minutes", nargs="?", type=float, default=10.0,
                    help="minutes per target (default 10)")
    ap.add_argument("--targets", help="comma-separated targets (default: all)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="targets fuzzed at once, one core each (default 1); minimising and "
                         "coverage follow once every run has ended, so that they take no "
                         "core from a running target")
    ap.add_argument("--no-coverage", action="store_true", help="skip the coverage step")
    ap.add_argument("--branch-toolchain", default=default_branch_toolchain(),
                    help="toolchain for the coverage builds, with -Zcoverage-options=branch "
                         "(stable cannot count branches); default nightly when installed; "
                         "'none': stable, regions reported instead of branches")
    ap.add_argument("--self-test", action="store_true", help="check this script and exit")
    args = ap.parse_args()
    if args.branch_toolchain == "none":
        args.branch_toolchain = None
    if args.self_test:
        self_test()
        return
    self_test()
    all_targets = list_targets()
    targets = args.targets.split(",") if args.targets else all_targets
    unknown = [t for t in targets if t not in all_targets]
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(unknown)} (cargo fuzz list)")
    seconds = max(1, round(args.minutes * 60))
    say("build every target (cargo fuzz build --sanitizer none)")
    subprocess.run(["cargo", "fuzz", "build", "--sanitizer", "none"], cwd=FUZZ,
                   env=cargo_env(), check=True)
    logs = target_dir() / "fuzz-campaign"
    logs.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = {t: r for t, r in results.items() if t in all_targets}
    today = datetime.date.today().isoformat()
    lock = threading.Lock()

    def record(target, r):
        with lock:
            results[target] = r
            RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")

    def finish(target, r):
        r["corpus_minimised"] = minimise(target, logs)
        r["coverage"] = (None if args.no_coverage
                         else coverage(target, logs, args.branch_toolchain))
        record(target, r)
        say(f"{target}: {r['executions']:,} executions, {r['exec_per_sec']:,}/s, "
            f"{len(r['crashes'])} crashes, corpus {r['corpus_before'][0]} -> "
            f"{r['corpus_after_run'][0]} -> {r['corpus_minimised'][0]} entries")

    if args.jobs <= 1:
        for target in targets:
            r = run_target(target, seconds, logs)
            r["date"] = today
            finish(target, r)
    else:
        # Fuzz `jobs` targets at a time; a run's row is recorded as soon as it ends (so an
        # interrupted campaign keeps it), then cmin and coverage run one at a time.
        def fuzz_one(target):
            r = run_target(target, seconds, logs)
            r["date"] = today
            record(target, dict(r, corpus_minimised=r["corpus_after_run"], coverage=None))
            return target, r

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            done = list(pool.map(fuzz_one, targets))
        for target, r in done:
            finish(target, r)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    branches = (f"branch counters from a `{args.branch_toolchain}` build with "
                "`-Z coverage-options=branch`" if args.branch_toolchain else
                "stable rustc counts no branches, so the branch column shows llvm's code "
                "regions instead")
    note = (f"Toolchain: {rustc}, one core per target, "
            f"{args.jobs} target(s) at a time. Coverage: `cargo fuzz coverage` "
            "(-C instrument-coverage) over the minimised corpus, `llvm-cov export` from the "
            f"stable toolchain's llvm-tools, summed over the files listed below; {branches}.")
    write_report(results, REPORT, note, TEMPLATE)
    say(f"wrote {REPORT.relative_to(REPO)} and {RESULTS.relative_to(REPO)}")
    if any(results[t]["crashes"] for t in targets):
        say("crashes found: see fuzz/artifacts/")
        sys.exit(1)


if __name__ == "__main__":
    main()
