//! Bad node and proxy configurations fail at start with one clear line naming the file and
//! the key, and exit status 1.

mod support;

use support::{Pki, fipstun, s, write};

/// Run `fipstun <mode> --config <text>` and return its stderr; it must fail.
fn fails(mode: &str, text: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &format!("{mode}.toml"), text);
    let out = fipstun(&[mode, "--config", s(&path)]);
    assert_eq!(out.status.code(), Some(1), "{mode} must refuse:\n{text}");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        s(&path).to_string(),
    )
}

#[test]
fn node_config_errors_name_file_and_key() {
    let (err, file) = fails("node", "drain = \"10s\"\n");
    assert!(
        err.contains(&format!(
            "fipstun node: bad configuration: {file}: `hbone / wireguard`: configure at least one of [hbone] (or --hbone-listen) and [wireguard]"
        )),
        "{err}"
    );
    let (err, file) = fails("node", "[hbone]\nlisten = \"127.0.0.1:0\"\n");
    assert!(
        err.contains(&format!("{file}: `identity`: [hbone] needs [identity]")),
        "{err}"
    );
    let (err, file) = fails("node", "[hbone]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    assert!(err.contains(&file), "{err}");
    assert!(err.contains("unknown field `lisen`"), "{err}");
    let (err, file) = fails(
        "node",
        "allow_targets = [\"127.0.0.0/33\"]\n[hbone]\nlisten = \"127.0.0.1:0\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `allow_targets[0]`: `127.0.0.0/33` is not a destination: an IPv4 prefix is at most 32 bits"
        )),
        "{err}"
    );
    let (err, file) = fails(
        "node",
        "[hbone]\nlisten = \"127.0.0.1:0\"\nallow = [\"spiffe://example.org/ok\", \"https://example.org/x\"]\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `hbone.allow[1]`: `https://example.org/x` is not a SPIFFE ID"
        )),
        "{err}"
    );
    let (err, file) = fails("node", "drain = \"ten seconds\"\n[hbone]\n");
    assert!(
        err.contains(&format!(
            "{file}: `drain`: `ten seconds` is not a duration like 500ms, 10s, 2m, 1h or 365d"
        )),
        "{err}"
    );
    let (err, file) = fails(
        "node",
        "fips = \"off\"\n[wireguard]\nlisten = \"127.0.0.1:0\"\nprivate_key = \"/nonexistent/wg.key\"\naddress = \"10.99.0.1\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `wireguard.private_key`: /nonexistent/wg.key: No such file or directory"
        )),
        "{err}"
    );
}

#[test]
fn unreadable_or_mismatched_identity_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    std::fs::remove_file(pki.node.join("svid-key.pem")).unwrap();
    let (err, file) = fails(
        "node",
        &format!(
            "[identity]\ndir = \"{}\"\n[hbone]\nlisten = \"127.0.0.1:0\"\n",
            s(&pki.node)
        ),
    );
    assert!(
        err.contains(&format!(
            "{file}: `identity.dir`: cannot read {}: No such file or directory",
            s(&pki.node.join("svid-key.pem"))
        )),
        "{err}"
    );
    // An SVID from another CA does not chain to this bundle.
    let other = Pki::new(&dir.path().join("other"));
    std::fs::copy(other.proxy.join("bundle.pem"), pki.proxy.join("bundle.pem")).unwrap();
    let (err, _) = fails(
        "node",
        &format!(
            "[identity]\ndir = \"{}\"\n[hbone]\nlisten = \"127.0.0.1:0\"\n",
            s(&pki.proxy)
        ),
    );
    assert!(
        err.contains("does not lead to a root in its trust domain's bundle"),
        "{err}"
    );
}

#[test]
fn proxy_config_errors_name_file_and_key() {
    let (err, file) = fails(
        "proxy",
        "fips = \"required\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:80\"\nvia = \"wireguard\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `listener[0].via`: `wireguard` is not FIPS-approved but fips = \"required\""
        )),
        "{err}"
    );
    let (err, file) = fails(
        "proxy",
        "[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:80\"\nvia = \"hbone\"\nnode = \"127.0.0.1:15008\"\nnode_id = \"spiffe://Example.org/../x\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `listener[0].node_id`: `spiffe://Example.org/../x` is not a SPIFFE ID"
        )),
        "{err}"
    );
    let (err, file) = fails(
        "proxy",
        "[[listener]]\nlisten = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:80\"\nvia = \"hbone\"\nnode = \"127.0.0.1:15008\"\nnode_id = \"spiffe://example.org/node\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `identity`: via = \"hbone\" needs [identity]"
        )),
        "{err}"
    );
    let (err, file) = fails(
        "proxy",
        "[[listener]]\nlisten = \"localhost\"\ntarget = \"127.0.0.1:80\"\nvia = \"plain\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `listener[0].listen`: `localhost` is not a socket address"
        )),
        "{err}"
    );
    let (err, file) = fails("proxy", "metrics = \"127.0.0.1:0\"\n");
    assert!(
        err.contains(&format!("{file}: `listener`: no [[listener]]")),
        "{err}"
    );
}

#[test]
fn flags_alone_need_no_file() {
    let out = fipstun(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:80",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command line: `listener[0].via`: missing (or --via)"),
        "{err}"
    );
}

#[test]
fn a_node_runs_wireguard_only_when_fips_is_off() {
    let (err, file) = fails(
        "node",
        "[wireguard]\nlisten = \"127.0.0.1:0\"\nprivate_key = \"wg.key\"\naddress = \"10.99.0.1\"\n",
    );
    assert!(
        err.contains(&format!(
            "{file}: `wireguard`: WireGuard is not FIPS-approved (X25519, ChaCha20-Poly1305, BLAKE2s) and fips is \"required\" by default; set fips = \"off\""
        )),
        "{err}"
    );
}
