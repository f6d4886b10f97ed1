//! aws-lc-rs without the FIPS module, for fipstun's crypto provider comparison. The crate has
//! no code of its own: its one bench (`benches/providers_nonfips.rs`) runs the workspace's
//! provider workloads against this build of aws-lc-rs. See Cargo.toml for why it stands apart
//! from the workspace.
