#![no_main]
//! SOCKS5 (RFC 1928) from arbitrary client bytes: the greeting parser on the input, the request
//! parser on what follows a greeting and on the whole input. Never panics; what parses took
//! no more bytes than it was given, encodes back into bytes that parse to the same message,
//! and parses the same from every prefix that contains it (shorter prefixes need more bytes
//! or fail the same way).
use fipstun_transport::socks5::{Socks5Error, parse_greeting, parse_request};
use libfuzzer_sys::fuzz_target;

/// A SOCKS5 parser: a message and the bytes it took, `None` if more bytes are needed.
type Parser<T> = fn(&[u8]) -> Result<Option<(T, usize)>, Socks5Error>;

fn prefixes_agree<T: PartialEq + std::fmt::Debug>(data: &[u8], parse: Parser<T>) {
    let whole = parse(data);
    if let Ok(Some((_, used))) = &whole {
        assert!(*used <= data.len());
        for end in 0..*used {
            assert_eq!(
                parse(&data[..end]).ok(),
                Some(None),
                "prefix of {end} bytes"
            );
        }
        // More bytes after a message do not change it.
        assert_eq!(parse(&data[..*used]), whole);
    }
    if let Err(e) = &whole {
        let _ = e.reply();
        let _ = e.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    prefixes_agree(data, parse_greeting);
    prefixes_agree(data, parse_request);
    if let Ok(Some((greeting, used))) = parse_greeting(data) {
        let again = parse_greeting(&greeting.encode()).expect("an encoded greeting parses");
        assert_eq!(again.map(|(g, _)| g), Some(greeting));
        let rest = &data[used..];
        prefixes_agree(rest, parse_request);
    }
    for input in [data, data.get(3..).unwrap_or_default()] {
        if let Ok(Some((request, _))) = parse_request(input) {
            let bytes = request.encode();
            let (again, used) = parse_request(&bytes)
                .expect("an encoded request parses")
                .expect("an encoded request is complete");
            assert_eq!(used, bytes.len());
            assert_eq!(again, request);
            let _ = request.target.to_target().to_string();
        }
    }
});
