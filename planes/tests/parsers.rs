//! Property tests for the parsers of untrusted bytes: whatever comes in, a typed verdict comes
//! out, never a panic.

use std::time::SystemTime;

use fipstun_planes::proto::X509SvidResponse;
use fipstun_planes::response::{X509Context, parse_pem_chain, split_der_certificates};
use fipstun_planes::workload::EndpointSocket;
use proptest::prelude::*;

proptest! {
    #[test]
    fn split_der_never_panics_and_keeps_every_byte(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(certs) = split_der_certificates(&bytes) {
            let joined: Vec<u8> = certs.iter().flat_map(|c| c.to_vec()).collect();
            prop_assert_eq!(joined, bytes);
        }
    }

    #[test]
    fn pem_chains_never_panic(elements in proptest::collection::vec(
        prop_oneof![
            ".*",
            "-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]{0,200}\n-----END CERTIFICATE-----\n",
        ],
        0..4,
    )) {
        if let Ok(certs) = parse_pem_chain(&elements) {
            prop_assert!(certs.len() >= elements.len());
        }
    }

    #[test]
    fn workload_responses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        use prost::Message;
        if let Ok(response) = X509SvidResponse::decode(&bytes[..]) {
            let _ = X509Context::from_response(&response, None, SystemTime::now());
        }
    }

    #[test]
    fn accepted_endpoint_addresses_are_absolute_paths(value in "(unix:(//)?)?/?[a-z/.?#]{0,20}") {
        if let Ok(socket) = EndpointSocket::parse(&value) {
            prop_assert!(socket.path().is_absolute());
        }
    }
}
