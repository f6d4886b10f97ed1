//! fipstun-transport: what a tunnel is, independent of how it is protected.
//!
//! This crate will hold the `Transport` trait (open a tunnelled stream to a target through the
//! peer node that serves it) and its server-side counterpart, plus the types both backends share:
//! targets, the authenticated peer identity, and `SecurityInfo` (backend, protocol, cipher and
//! whether the protection is FIPS-approved), and a shared conformance suite both backends run.
//!
//! Nothing is implemented here yet: the trait arrives with the transport issue, once the HBONE
//! backend exists to implement it. See `../shared/DESIGN.md` §1 for the planned shape.
