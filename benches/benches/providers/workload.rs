//! What the provider comparison measures, shared by every crate that runs part of it (the
//! workspace bench `providers`, the standalone `benches/providers-nonfips` and bench-report):
//! the providers, the primitives with their inputs, and the criterion IDs they are filed under,
//! `providers/<primitive>/<input>/<provider>`.

// Each includer uses part of this file: the non-FIPS crate one provider, bench-report no
// message bytes.
#![allow(dead_code)]

/// The criterion group every provider bench is filed under.
pub(crate) const GROUP: &str = "providers";

/// One crypto library as the comparison names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Provider {
    /// The last component of the criterion ID.
    pub(crate) id: &'static str,
    /// The table's column heading.
    pub(crate) label: &'static str,
}

/// aws-lc-rs 1.17.4 with `fips`: AWS-LC FIPS 3.x, the validated module fipstun links. The
/// other columns are stated against this one.
pub(crate) const AWS_LC_FIPS: Provider = Provider {
    id: "aws-lc-rs-fips",
    label: "aws-lc-rs FIPS",
};
/// The same aws-lc-rs release without `fips` (aws-lc-sys: AWS-LC's main line), built by
/// `benches/providers-nonfips` because cargo cannot build both in one workspace.
pub(crate) const AWS_LC: Provider = Provider {
    id: "aws-lc-rs",
    label: "aws-lc-rs (non-FIPS)",
};
/// ring 0.17.
pub(crate) const RING: Provider = Provider {
    id: "ring",
    label: "ring",
};
/// RustCrypto: aes-gcm, p256, sha2, and x25519-dalek (the WireGuard engine's X25519).
pub(crate) const RUSTCRYPTO: Provider = Provider {
    id: "rustcrypto",
    label: "RustCrypto",
};

/// Column order in the table; the FIPS module first, as every ratio is to it.
pub(crate) const PROVIDERS: [Provider; 4] = [AWS_LC_FIPS, AWS_LC, RING, RUSTCRYPTO];

/// AEAD record sizes in bytes: a small control message, a full WireGuard-sized packet (the
/// default inner MTU of 1420), and a full TLS record (16 KiB).
pub(crate) const AEAD_SIZES: [usize; 3] = [64, 1420, 16384];
/// SHA-256 input sizes in bytes: one block's worth of a handshake hash update, and a TLS record.
pub(crate) const SHA256_SIZES: [usize; 2] = [64, 16384];
/// The ECDSA message length: about a TLS 1.3 CertificateVerify input (64 spaces, the context
/// string, a zero byte and the transcript hash), as in the `crypto` bench.
pub(crate) const ECDSA_MESSAGE: [u8; 130] = [0x5a; 130];
/// The input component of the key agreement IDs: one side's share of an exchange.
pub(crate) const KEY_AGREEMENT_INPUT: &str = "keygen_agree";
/// The one AEAD nonce every seal and open uses. A benchmark only: never reuse a nonce with a
/// key outside one.
pub(crate) const AEAD_NONCE: [u8; 12] = [1; 12];

/// One row of the table: a primitive and its input, and how the table names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// The primitive's ID component (`aes128gcm_seal`, `x25519`).
    pub(crate) primitive: &'static str,
    /// The input's ID component: a size in bytes, or what one operation is.
    pub(crate) input: String,
    /// Whether the input is a byte count (the table then shows throughput).
    pub(crate) bytes: Option<usize>,
    /// The table's wording for the row.
    pub(crate) label: String,
}

impl Row {
    /// The criterion ID of this row for `provider`.
    pub(crate) fn id(&self, provider: &Provider) -> String {
        format!("{GROUP}/{}/{}/{}", self.primitive, self.input, provider.id)
    }

    /// The ID below the group (`<primitive>/<input>`): what `BenchmarkId::new` takes as its
    /// function name, with the provider as its parameter.
    pub(crate) fn function(&self) -> String {
        format!("{}/{}", self.primitive, self.input)
    }
}

fn sized(primitive: &'static str, what: &str, size: usize) -> Row {
    Row {
        primitive,
        input: size.to_string(),
        bytes: Some(size),
        label: format!("{what}, {size} B"),
    }
}

fn op(primitive: &'static str, input: &str, label: &str) -> Row {
    Row {
        primitive,
        input: input.to_owned(),
        bytes: None,
        label: label.to_owned(),
    }
}

/// The AEAD rows of one primitive (`aes128gcm_seal`, ...), one per size.
pub(crate) fn aead_rows(primitive: &'static str, what: &str) -> Vec<Row> {
    AEAD_SIZES
        .iter()
        .map(|&n| sized(primitive, what, n))
        .collect()
}

/// Every row in table order.
pub(crate) fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (primitive, what) in AEADS {
        rows.extend(aead_rows(primitive, what));
    }
    rows.push(ecdsa_sign());
    rows.push(ecdsa_verify());
    rows.push(ecdh_p256());
    rows.push(x25519());
    rows.extend(sha256_rows());
    rows
}

/// The AEAD primitives: ID component and wording.
pub(crate) const AEADS: [(&str, &str); 4] = [
    ("aes128gcm_seal", "AES-128-GCM seal"),
    ("aes128gcm_open", "AES-128-GCM open"),
    ("aes256gcm_seal", "AES-256-GCM seal"),
    ("aes256gcm_open", "AES-256-GCM open"),
];

/// ECDSA P-256 with SHA-256, ASN.1 (DER) signature, over [`ECDSA_MESSAGE`].
pub(crate) fn ecdsa_sign() -> Row {
    let n = ECDSA_MESSAGE.len();
    op(
        "ecdsa_p256_sign",
        &n.to_string(),
        &format!("ECDSA P-256 sign, {n} B message"),
    )
}

/// Verification of [`ecdsa_sign`]'s signature, parsing the SEC 1 public key each time as a TLS
/// peer does with a certificate's key.
pub(crate) fn ecdsa_verify() -> Row {
    let n = ECDSA_MESSAGE.len();
    op(
        "ecdsa_p256_verify",
        &n.to_string(),
        &format!("ECDSA P-256 verify, {n} B message"),
    )
}

/// ECDH P-256, one side: a fresh key pair, its public key encoded, the shared secret with a
/// fixed peer public key.
pub(crate) fn ecdh_p256() -> Row {
    op(
        "ecdh_p256",
        KEY_AGREEMENT_INPUT,
        "ECDH P-256, one side (key pair + agree)",
    )
}

/// X25519, one side, the same steps as [`ecdh_p256`].
pub(crate) fn x25519() -> Row {
    op(
        "x25519",
        KEY_AGREEMENT_INPUT,
        "X25519, one side (key pair + agree)",
    )
}

/// SHA-256 of one buffer, one row per size.
pub(crate) fn sha256_rows() -> Vec<Row> {
    SHA256_SIZES
        .iter()
        .map(|&n| sized("sha256", "SHA-256", n))
        .collect()
}
