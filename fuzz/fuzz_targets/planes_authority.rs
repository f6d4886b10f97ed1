#![no_main]
//! The Workload API socket's `:authority` adapter from arbitrary client bytes: HTTP/2 frames
//! and HPACK blocks, fed in arbitrary splits. It must never panic, and an input it accepts in
//! one piece it must accept, with the same output, in any split.
use fipstun_planes::authority::AuthorityRewriter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(body);

    let mut whole = Vec::new();
    let whole_ok = AuthorityRewriter::new().feed(&input, &mut whole).is_ok();

    let mut pieces = Vec::new();
    let mut rewriter = AuthorityRewriter::new();
    let mut pieces_ok = true;
    for chunk in input.chunks(usize::from(split).max(1)) {
        if rewriter.feed(chunk, &mut pieces).is_err() {
            pieces_ok = false;
            break;
        }
    }
    assert_eq!(whole_ok, pieces_ok);
    if whole_ok {
        assert_eq!(whole, pieces);
    }
});
