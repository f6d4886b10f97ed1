//! The workspace's layering, checked against `cargo metadata` (issue 21):
//!
//! - dependencies point down only, in the order README.md states in its "Crates" section
//!   ("Dependencies point down only: identity ← policy ← …"): every crate's normal and build
//!   dependencies on other workspace crates sit in a lower layer, never its own or a higher one;
//! - no crate depends on the benches (`fipstun-benches`) through normal or build dependencies,
//!   and only test-only crates may through dev-dependencies, so the production binary never
//!   links them;
//! - the facade (`fipstun/`, package `fipstun`, which re-exports the layers) sits above every
//!   layer it re-exports and below the binary (`cli/`), whether or not the binary uses it.
//!
//! The order is read out of README.md, never copied (as in readme.rs): the sentence a reader
//! sees is the rule that is checked, so the two cannot drift apart. Crates are named there by
//! their directory, which survives a package rename; the binary is found by its `[[bin]]`
//! target, not by its package name.
//!
//! `cargo metadata --no-deps` lists the workspace's packages with their declared dependencies
//! without resolving the registry (no network, no other platforms' crates). That is enough: a
//! registry crate cannot depend on a path crate of this workspace, so every route from one
//! workspace crate to another runs through workspace crates only. `fuzz/` is its own workspace
//! and not checked here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Where the order is stated: the line of README.md that starts with this. Layers from the
/// bottom up, separated by `←`; the crates of one layer (their directories) by `/` or `,`; the
/// order ends at the sentence's period.
const ORDER_SENTENCE: &str = "Dependencies point down only:";

/// The benches' package, which no other crate may link.
const BENCHES: &str = "fipstun-benches";

/// Test-only packages: these alone may dev-depend on the benches (none does today).
const TEST_ONLY: &[&str] = &["fipstun-fips-tests"];

/// The production binary's `[[bin]]` target name (its package is `fipstun-cli`; the package
/// named `fipstun` is the library facade).
const BINARY: &str = "fipstun";

/// The facade's directory, and the directories of the layers it must sit between.
const FACADE: &str = "fipstun";
const BELOW_FACADE: &[&str] = &[
    "identity",
    "policy",
    "transport",
    "hbone",
    "wireguard",
    "planes",
];
const ABOVE_FACADE: &[&str] = &["cli"];

/// How a dependency is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Build => "build",
            Kind::Dev => "dev",
        }
    }

    /// Normal and build dependencies are linked into (or run to build) the crate itself.
    fn links(self) -> bool {
        self != Kind::Dev
    }
}

/// One workspace package, as cargo metadata describes it.
#[derive(Debug)]
struct Package {
    name: String,
    /// Its directory relative to the workspace root (`cli`, `benches`, ...).
    dir: String,
    /// Its `[[bin]]` target names.
    bins: Vec<String>,
    /// Its dependencies on other workspace packages: (package name, kind).
    deps: Vec<(String, Kind)>,
}

impl Package {
    fn describe(&self) -> String {
        format!("`{}/` ({})", self.dir, self.name)
    }
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ lies in the workspace root")
}

/// The workspace's packages, by name.
fn workspace() -> BTreeMap<String, Package> {
    let root = workspace_root();
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let meta_root = Path::new(meta["workspace_root"].as_str().expect("workspace_root"));
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("package name"))
        .collect();
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("package name").to_string();
            let manifest = Path::new(p["manifest_path"].as_str().expect("manifest_path"));
            let dir = manifest
                .parent()
                .and_then(|d| d.strip_prefix(meta_root).ok())
                .expect("a workspace package lies under the workspace root")
                .to_string_lossy()
                .into_owned();
            let bins = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.contains(&"bin".into()))
                })
                .map(|t| t["name"].as_str().expect("target name").to_string())
                .collect();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter_map(|d| {
                    let dep = d["name"].as_str().expect("dependency name");
                    let kind = match d["kind"].as_str() {
                        None => Kind::Normal,
                        Some("build") => Kind::Build,
                        Some("dev") => Kind::Dev,
                        Some(other) => panic!("{name}: unknown dependency kind {other:?}"),
                    };
                    names.contains(dep).then(|| (dep.to_string(), kind))
                })
                .collect();
            (
                name.clone(),
                Package {
                    name,
                    dir,
                    bins,
                    deps,
                },
            )
        })
        .collect()
}

/// The README's order: each crate directory's layer, 0 at the bottom, and the sentence itself.
fn readme_order() -> (BTreeMap<String, usize>, String) {
    let path = workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with(ORDER_SENTENCE))
        .unwrap_or_else(|| {
            panic!(
                "README.md has no line starting {ORDER_SENTENCE:?}: the layer order this test \
                 checks is read from it"
            )
        });
    let order = line[ORDER_SENTENCE.len()..]
        .split('.')
        .next()
        .unwrap_or_default();
    let mut layer_of = BTreeMap::new();
    for (layer, crates) in order.split('←').enumerate() {
        for dir in crates.split(['/', ',']).map(str::trim) {
            assert!(
                !dir.is_empty(),
                "README.md: an empty name in the layer order {order:?}"
            );
            if let Some(before) = layer_of.insert(dir.to_string(), layer) {
                panic!(
                    "README.md names `{dir}` twice in the layer order (layers {before} and {layer})"
                );
            }
        }
    }
    assert!(layer_of.len() > 1, "README.md: no layer order in {line:?}");
    (layer_of, line.trim().to_string())
}

/// Every workspace crate's normal and build dependencies point to a lower layer of the README's
/// order, and the order names exactly the workspace's crates.
#[test]
fn dependencies_point_down_in_the_readme_order() {
    let packages = workspace();
    let (layer_of, sentence) = readme_order();
    let mut wrong = Vec::new();
    let dirs: BTreeSet<&str> = packages.values().map(|p| p.dir.as_str()).collect();
    for p in packages.values() {
        if !layer_of.contains_key(&p.dir) {
            wrong.push(format!(
                "{} is a workspace crate the README's order does not place: add it to the \
                 sentence",
                p.describe()
            ));
        }
    }
    for dir in layer_of.keys() {
        if !dirs.contains(dir.as_str()) {
            wrong.push(format!(
                "the README's order names `{dir}`, which is no workspace crate's directory"
            ));
        }
    }
    for p in packages.values() {
        let Some(&from) = layer_of.get(&p.dir) else {
            continue;
        };
        for (dep, kind) in p.deps.iter().filter(|(_, k)| k.links()) {
            let d = &packages[dep];
            let Some(&to) = layer_of.get(&d.dir) else {
                continue;
            };
            if to >= from {
                wrong.push(format!(
                    "{} -> {} ({} dependency) points {} its layer: {} is in layer {from}, {} in \
                     layer {to}",
                    p.describe(),
                    d.describe(),
                    kind.label(),
                    if to == from { "within" } else { "above" },
                    p.dir,
                    d.dir,
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the workspace breaks its layering (README.md: \"{sentence}\"):\n  {}",
        wrong.join("\n  ")
    );
}

/// No crate links the benches: no normal or build dependency on them anywhere, and dev
/// dependencies only from test-only crates.
#[test]
fn nothing_depends_on_the_benches() {
    let packages = workspace();
    assert!(
        packages.contains_key(BENCHES),
        "no package {BENCHES} in the workspace: update BENCHES in this test"
    );
    let mut wrong = Vec::new();
    for p in packages.values().filter(|p| p.name != BENCHES) {
        for (_, kind) in p.deps.iter().filter(|(d, _)| d == BENCHES) {
            if kind.links() || !TEST_ONLY.contains(&p.name.as_str()) {
                wrong.push(format!(
                    "{} -> `benches/` ({BENCHES}) as a {} dependency",
                    p.describe(),
                    kind.label()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "benches are never linked into production, yet:\n  {}\n(move what is shared into a \
         production crate such as fipstun-scorecard, and have the benches depend on that)",
        wrong.join("\n  ")
    );
}

/// The `fipstun` binary's normal and build dependency closure holds no benches.
#[test]
fn the_binary_never_links_the_benches() {
    let packages = workspace();
    let with_bin: Vec<&Package> = packages
        .values()
        .filter(|p| p.bins.iter().any(|b| b == BINARY))
        .collect();
    let [binary] = with_bin[..] else {
        panic!(
            "expected exactly one workspace package with a [[bin]] named {BINARY:?}, found {:?}",
            with_bin.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
    };
    // Breadth first, remembering who reached whom, to print the route if the benches are in.
    let mut reached_from: BTreeMap<&str, Option<&str>> = BTreeMap::from([(&*binary.name, None)]);
    let mut queue = VecDeque::from([&*binary.name]);
    while let Some(name) = queue.pop_front() {
        for (dep, _) in packages[name].deps.iter().filter(|(_, k)| k.links()) {
            if !reached_from.contains_key(dep.as_str()) {
                reached_from.insert(dep, Some(name));
                queue.push_back(dep);
            }
        }
    }
    if reached_from.contains_key(BENCHES) {
        let mut route = vec![BENCHES];
        while let Some(Some(prev)) = reached_from.get(route.last().expect("non-empty")) {
            route.push(prev);
        }
        route.reverse();
        panic!(
            "the {BINARY} binary (package {}) links the benches through normal/build \
             dependencies: {}",
            binary.name,
            route.join(" -> ")
        );
    }
}

/// The README places the facade above every crate it re-exports and below the binary.
#[test]
fn the_facade_sits_between_the_backends_and_the_binary() {
    let (layer_of, sentence) = readme_order();
    let layer = |dir: &str| {
        *layer_of.get(dir).unwrap_or_else(|| {
            panic!("README.md's layer order (\"{sentence}\") does not place `{dir}/`")
        })
    };
    let facade = layer(FACADE);
    let mut wrong = Vec::new();
    for dir in BELOW_FACADE {
        if layer(dir) >= facade {
            wrong.push(format!("`{dir}/` must be below the facade `{FACADE}/`"));
        }
    }
    for dir in ABOVE_FACADE {
        if layer(dir) <= facade {
            wrong.push(format!("`{dir}/` must be above the facade `{FACADE}/`"));
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md: \"{sentence}\":\n  {}",
        wrong.join("\n  ")
    );
}
