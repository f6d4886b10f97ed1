//! The protobuf messages of the two identity planes, written by hand from the public API
//! descriptions: message shapes and field numbers are facts of the wire format. No `.proto`
//! compilation happens at build time (so no `protoc`).
//!
//! - SPIFFE Workload API (`workload.proto`, service `SpiffeWorkloadAPI`, no package).
//! - Istio CA API (`istio.v1.auth.IstioCertificateService`, `security/proto/pb/ca.proto`).

use std::collections::HashMap;

/// gRPC path of `SpiffeWorkloadAPI.FetchX509SVID` (server streaming).
pub const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";

/// gRPC path of `SpiffeWorkloadAPI.FetchX509Bundles` (server streaming).
pub const FETCH_X509_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";

/// gRPC path of `istio.v1.auth.IstioCertificateService.CreateCertificate` (unary).
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// The metadata key every Workload API request must carry with the value `true` (SPIFFE
/// Workload Endpoint spec, "Security header"), so that a browser or SSRF cannot reach it.
pub const WORKLOAD_HEADER: &str = "workload.spiffe.io";

/// `X509SVIDRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`: the workload's SVIDs and the bundles to trust.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// `svids = 1`: the workload's X.509-SVIDs; the first is the default.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// `crl = 2`: DER CRLs (unused by fipstun).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// `federated_bundles = 3`: trust domain name (`spiffe://td` or `td`) to concatenated DER
    /// root certificates.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`: one SVID with its key and its trust domain's bundle.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    /// `spiffe_id = 1`: the SPIFFE ID the SVID proves.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// `x509_svid = 2`: the certificate chain, leaf first, as concatenated DER.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// `x509_svid_key = 3`: the private key, PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// `bundle = 4`: the roots of the SVID's own trust domain, as concatenated DER.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// `hint = 5`: an operator-chosen label to pick among several SVIDs.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`: the trust bundles only (for workloads that verify peers but hold no
/// SVID of their own).
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// `crl = 1`: DER CRLs (unused by fipstun).
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// `bundles = 2`: trust domain name to concatenated DER root certificates, the
    /// workload's own trust domain included.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `IstioCertificateRequest`. Field 4 (`metadata`, a `google.protobuf.Struct`) is not modelled:
/// fipstun never sends it, and prost skips it when decoding.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// `csr = 1`: a PEM `CERTIFICATE REQUEST`.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// `validity_duration = 3`: the requested TTL in seconds (`0`: the CA's default).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

/// `IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// `cert_chain = 1`: PEM strings, leaf first, the root last; an element may hold several
    /// PEM blocks.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    // Field key = (number << 3) | wire type; wire type 2 = length-delimited, 0 = varint.
    #[test]
    fn field_numbers_match_the_published_protos() {
        let svid = X509Svid {
            spiffe_id: "a".into(),
            x509_svid: vec![1],
            x509_svid_key: vec![2],
            bundle: vec![3],
            hint: "h".into(),
        };
        assert_eq!(
            svid.encode_to_vec(),
            [
                0x0a, 1, b'a', 0x12, 1, 1, 0x1a, 1, 2, 0x22, 1, 3, 0x2a, 1, b'h'
            ]
        );
        let resp = X509SvidResponse {
            svids: vec![X509Svid::default()],
            crl: vec![vec![9]],
            federated_bundles: [("td".to_string(), vec![7])].into(),
        };
        assert_eq!(
            resp.encode_to_vec(),
            // svids (empty message), crl, map entry {key=1 "td", value=2 [7]}
            [
                0x0a, 0, 0x12, 1, 9, 0x1a, 7, 0x0a, 2, b't', b'd', 0x12, 1, 7
            ]
        );
        let bundles = X509BundlesResponse {
            crl: vec![],
            bundles: [("td".to_string(), vec![7])].into(),
        };
        assert_eq!(
            bundles.encode_to_vec(),
            [0x12, 7, 0x0a, 2, b't', b'd', 0x12, 1, 7]
        );
        let req = IstioCertificateRequest {
            csr: "c".into(),
            validity_duration: 5,
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 1, b'c', 0x18, 5]);
        let resp = IstioCertificateResponse {
            cert_chain: vec!["x".into(), "y".into()],
        };
        assert_eq!(resp.encode_to_vec(), [0x0a, 1, b'x', 0x0a, 1, b'y']);
    }

    #[test]
    fn istio_metadata_field_is_skipped_when_decoding() {
        // csr = "c", metadata (field 4, an empty Struct), validity_duration = 7.
        let bytes = [0x0a, 1, b'c', 0x22, 0, 0x18, 7];
        let req = IstioCertificateRequest::decode(&bytes[..]).unwrap();
        assert_eq!(req.csr, "c");
        assert_eq!(req.validity_duration, 7);
    }

    #[test]
    fn truncated_input_is_a_decode_error() {
        assert!(X509SvidResponse::decode(&[0x0a, 5, 0][..]).is_err());
    }
}
