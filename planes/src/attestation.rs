//! Who is calling the Workload API, and which SVIDs it may have: the caller's uid, gid and pid
//! from the socket (`SO_PEERCRED`), matched against registration entries the way SPIRE's Unix
//! workload attestor does it. This module is policy only; the server reads the credentials.

use std::fmt;
use std::str::FromStr;

use fipstun_identity::spiffe::SpiffeId;

use crate::error::Error;

/// The process on the other end of a Workload API connection, as the kernel reported it when
/// the connection was accepted (`SO_PEERCRED`: the credentials at `connect()` time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallerProcess {
    /// Effective user ID.
    pub uid: u32,
    /// Effective group ID.
    pub gid: u32,
    /// Process ID, where the platform reports it (Linux does).
    pub pid: Option<i32>,
}

impl CallerProcess {
    /// From tokio's view of `SO_PEERCRED`.
    pub fn from_ucred(cred: &tokio::net::unix::UCred) -> Self {
        Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        }
    }
}

/// One property a caller must have, in SPIRE's Unix attestor names: `unix:uid:1000`,
/// `unix:gid:1000`. Process IDs are not selectors (SPIRE has none either): a pid is reused
/// after the process exits, so it cannot name a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnixSelector {
    /// The caller's effective user ID (`unix:uid:N`).
    Uid(u32),
    /// The caller's effective group ID (`unix:gid:N`).
    Gid(u32),
}

impl UnixSelector {
    /// Whether `caller` has this property.
    pub fn matches(&self, caller: &CallerProcess) -> bool {
        match *self {
            Self::Uid(uid) => caller.uid == uid,
            Self::Gid(gid) => caller.gid == gid,
        }
    }
}

impl FromStr for UnixSelector {
    type Err = Error;

    /// Parse `unix:uid:N` or `unix:gid:N` (decimal).
    fn from_str(value: &str) -> Result<Self, Error> {
        let bad = |reason| Error::Selector {
            value: value.to_string(),
            reason,
        };
        let rest = value
            .strip_prefix("unix:")
            .ok_or_else(|| bad("expected unix:uid:N or unix:gid:N"))?;
        let (kind, number) = rest
            .split_once(':')
            .ok_or_else(|| bad("expected unix:uid:N or unix:gid:N"))?;
        // u32::from_str takes a leading '+'; an ID is digits only.
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the ID must be a decimal number"));
        }
        let id: u32 = number
            .parse()
            .map_err(|_| bad("the ID does not fit 32 bits"))?;
        match kind {
            "uid" => Ok(Self::Uid(id)),
            "gid" => Ok(Self::Gid(id)),
            _ => Err(bad("only the uid and gid selectors are supported")),
        }
    }
}

impl fmt::Display for UnixSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(uid) => write!(f, "unix:uid:{uid}"),
            Self::Gid(gid) => write!(f, "unix:gid:{gid}"),
        }
    }
}

/// A SPIFFE ID and the selectors a caller must **all** have to be given its SVID (as in a SPIRE
/// registration entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationEntry {
    id: SpiffeId,
    selectors: Vec<UnixSelector>,
}

impl RegistrationEntry {
    /// An entry for `id`. At least one selector: an entry without any would match every
    /// caller, which is exactly what attestation is there to prevent.
    pub fn new(
        id: SpiffeId,
        selectors: impl IntoIterator<Item = UnixSelector>,
    ) -> Result<Self, Error> {
        let selectors: Vec<_> = selectors.into_iter().collect();
        if selectors.is_empty() {
            return Err(Error::Selector {
                value: id.to_string(),
                reason: "a registration entry needs at least one selector",
            });
        }
        Ok(Self { id, selectors })
    }

    /// The identity this entry hands out.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// What a caller must have.
    pub fn selectors(&self) -> &[UnixSelector] {
        &self.selectors
    }

    /// Whether `caller` has every selector of this entry.
    pub fn matches(&self, caller: &CallerProcess) -> bool {
        self.selectors.iter().all(|s| s.matches(caller))
    }
}

/// The registration entries a Workload API server attests callers against. Empty by default:
/// a caller that matches no entry is refused (`PermissionDenied`), never served someone
/// else's SVID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadRegistry {
    entries: Vec<RegistrationEntry>,
}

impl WorkloadRegistry {
    /// No entries: every caller is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `entry`.
    pub fn with(mut self, entry: RegistrationEntry) -> Self {
        self.entries.push(entry);
        self
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[RegistrationEntry] {
        &self.entries
    }

    /// The identities `caller` may have, each once, in entry order. Empty: refuse the caller.
    pub fn ids_for(&self, caller: &CallerProcess) -> Vec<SpiffeId> {
        let mut ids: Vec<SpiffeId> = Vec::new();
        for entry in self.entries.iter().filter(|e| e.matches(caller)) {
            if !ids.contains(&entry.id) {
                ids.push(entry.id.clone());
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn caller(uid: u32, gid: u32) -> CallerProcess {
        CallerProcess {
            uid,
            gid,
            pid: Some(4242),
        }
    }

    #[test]
    fn selectors_parse_in_spire_syntax_and_print_back() {
        for (text, sel) in [
            ("unix:uid:1000", UnixSelector::Uid(1000)),
            ("unix:gid:0", UnixSelector::Gid(0)),
            ("unix:uid:4294967295", UnixSelector::Uid(u32::MAX)),
        ] {
            assert_eq!(text.parse::<UnixSelector>().unwrap(), sel);
            assert_eq!(sel.to_string(), text);
        }
        for bad in [
            "uid:1000",
            "unix:uid:",
            "unix:uid:+1",
            "unix:uid:-1",
            "unix:uid:4294967296",
            "unix:user:web",
            "unix:pid:12",
            "unix:uid",
            "k8s:ns:prod",
        ] {
            assert!(
                matches!(bad.parse::<UnixSelector>(), Err(Error::Selector { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn a_caller_gets_the_ids_whose_selectors_it_all_has() {
        let web = id("spiffe://example.org/ns/prod/sa/web");
        let db = id("spiffe://example.org/ns/prod/sa/db");
        let ops = id("spiffe://example.org/ops");
        let registry = WorkloadRegistry::new()
            .with(RegistrationEntry::new(web.clone(), [UnixSelector::Uid(1000)]).unwrap())
            .with(RegistrationEntry::new(db.clone(), [UnixSelector::Uid(1001)]).unwrap())
            .with(
                RegistrationEntry::new(
                    ops.clone(),
                    [UnixSelector::Uid(1000), UnixSelector::Gid(50)],
                )
                .unwrap(),
            )
            // A second entry for web through the group: listed once.
            .with(RegistrationEntry::new(web.clone(), [UnixSelector::Gid(50)]).unwrap());
        assert_eq!(registry.ids_for(&caller(1000, 1000)), vec![web.clone()]);
        assert_eq!(registry.ids_for(&caller(1001, 1001)), vec![db.clone()]);
        assert_eq!(
            registry.ids_for(&caller(1000, 50)),
            vec![web.clone(), ops.clone()]
        );
        assert_eq!(registry.ids_for(&caller(7, 50)), vec![web]);
        assert!(registry.ids_for(&caller(1002, 1002)).is_empty());
        assert!(WorkloadRegistry::new().ids_for(&caller(0, 0)).is_empty());
    }

    #[test]
    fn an_entry_without_selectors_is_refused() {
        assert!(matches!(
            RegistrationEntry::new(id("spiffe://example.org/any"), []),
            Err(Error::Selector { .. })
        ));
    }
}
