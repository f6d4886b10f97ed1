#![no_main]
//! HBONE CONNECT parsing: an arbitrary authority and `baggage` / `traceparent` / `Forwarded`
//! values (split from the input at 0xff bytes), as an HTTP/2 request our server would see, and
//! each header parser on its own, and `Target::parse` (IP or DNS name) on the authority. Never
//! panics; what parses builds back into an equal request.
use fipstun_hbone::ConnectRequest;
use fipstun_hbone::wire::{Authority, Forwarded, HostnamePolicy, TraceParent};
use fipstun_transport::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let authority = parts.next().unwrap_or_default();
    let headers: Vec<&[u8]> = parts.take(3).collect();
    let policies = [HostnamePolicy::Reject, HostnamePolicy::Allow];

    if let Ok(s) = std::str::from_utf8(authority) {
        for p in &policies {
            // What the wire admits is a target, and converts back to the same authority.
            if let Ok(a) = Authority::parse(s, p) {
                let t = Target::try_from(&a).expect("an admitted authority is a target");
                assert_eq!(Authority::from(&t), a);
            }
        }
        // Targets (IP or name) round-trip through their authority form.
        if let Ok(t) = Target::parse(s) {
            assert_eq!(Target::parse(&t.to_string()), Ok(t));
        }
    }
    for h in &headers {
        if let Ok(s) = std::str::from_utf8(h) {
            let _ = TraceParent::parse(s);
            let _ = Forwarded::parse(s);
        }
    }

    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .version(http::Version::HTTP_2);
    match http::uri::Authority::try_from(authority) {
        Ok(a) => req = req.uri(http::Uri::from(a)),
        Err(_) => return,
    }
    for (name, value) in ["baggage", "traceparent", "forwarded"].iter().zip(&headers) {
        match http::HeaderValue::from_bytes(value) {
            Ok(v) => req = req.header(*name, v),
            Err(_) => return,
        }
    }
    let Ok(req) = req.body(()) else { return };
    for p in &policies {
        if let Ok(parsed) = ConnectRequest::parse(&req, p) {
            let again =
                ConnectRequest::parse(&parsed.to_http(), p).expect("a request we built must parse");
            assert_eq!(again, parsed);
        }
    }
});
