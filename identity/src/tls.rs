//! rustls glue: SPIFFE verifiers that check chain and identity *during* the handshake, and
//! certificate resolvers backed by a swappable current SVID.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Error;
use crate::bundle::TrustStore;
use crate::policy::CryptoPolicy;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::{self, Svid, SvidError, Usage};

/// Who may connect, decided on the peer's SPIFFE ID after its chain verified.
#[derive(Clone)]
pub enum Authorizer {
    /// Exactly these IDs.
    AnyOf(HashSet<SpiffeId>),
    /// Any ID in these trust domains.
    TrustDomains(HashSet<TrustDomain>),
    /// A caller-supplied rule.
    Custom(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl Authorizer {
    /// Only `ids`.
    pub fn ids(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self::AnyOf(ids.into_iter().collect())
    }

    /// Any ID in `tds`.
    pub fn trust_domains(tds: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self::TrustDomains(tds.into_iter().collect())
    }

    /// Whether `id` is authorized.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::AnyOf(set) => set.contains(id),
            Self::TrustDomains(tds) => tds.iter().any(|td| id.is_member_of(td)),
            Self::Custom(f) => f(id),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnyOf(set) => f.debug_tuple("AnyOf").field(set).finish(),
            Self::TrustDomains(tds) => f.debug_tuple("TrustDomains").field(tds).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Verifies a peer's X.509-SVID inside the rustls handshake: chain to the bundle of the peer's
/// trust domain, then the [`Authorizer`]. Implements both [`ServerCertVerifier`] (used by
/// clients) and [`ClientCertVerifier`] (used by servers). SNI and DNS names are ignored.
///
/// Errors reach rustls as [`CertificateError::Expired`], [`CertificateError::NotValidYet`],
/// [`CertificateError::UnknownIssuer`] where rustls has a matching kind (so the right alert is
/// sent), and otherwise as [`CertificateError::Other`] wrapping an [`SvidError`].
pub struct SpiffeVerifier {
    trust: TrustStore,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
    clock: Clock,
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

impl fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

impl SpiffeVerifier {
    /// A verifier using `trust` for chains and `authorizer` for identities, with the signature
    /// algorithms of the FIPS policy.
    pub fn new(trust: TrustStore, authorizer: Authorizer) -> Self {
        Self {
            trust,
            authorizer,
            algorithms: crate::policy::SIGNATURE_VERIFICATION,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Use `clock` instead of the system clock for validity checks (tests, virtual time).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Check a presented chain at `now` and authorize it.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
        usage: Usage,
    ) -> Result<SpiffeId, SvidError> {
        let bundles = self.trust.current();
        let id = svid::validate(chain, &bundles, now, usage)?;
        if !self.authorizer.allows(&id) {
            return Err(SvidError::Unauthorized(id));
        }
        Ok(id)
    }

    fn verify_for_rustls(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<SpiffeId, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        // rustls passes its own clock; ours wins when a test set one, else they agree.
        let _ = now;
        let now = (self.clock)();
        self.verify(&chain, now, usage).map_err(to_rustls)
    }
}

fn to_rustls(e: SvidError) -> rustls::Error {
    let kind = match e {
        SvidError::Expired { .. } => CertificateError::Expired,
        SvidError::NotYetValid { .. } => CertificateError::NotValidYet,
        SvidError::UnknownIssuer(_) => CertificateError::UnknownIssuer,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(kind)
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_for_rustls(end_entity, intermediates, now, Usage::Server)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_for_rustls(end_entity, intermediates, now, Usage::Client)?;
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SVID a workload currently presents, swapped atomically by rotation.
///
/// Implements [`ResolvesServerCert`] and [`ResolvesClientCert`]; configs are built once with it
/// and every handshake reads the current SVID. Before the first SVID is set it resolves nothing,
/// so handshakes fail closed.
#[derive(Default)]
pub struct SvidSlot {
    current: ArcSwapOption<CurrentSvid>,
}

/// What the slot holds: the rustls key and the facts about it.
#[derive(Debug)]
pub struct CurrentSvid {
    /// The certified key rustls presents.
    pub certified: Arc<CertifiedKey>,
    /// The identity it proves.
    pub id: SpiffeId,
    /// Its notAfter.
    pub not_after: SystemTime,
}

impl fmt::Debug for SvidSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cur = self.current.load();
        f.debug_struct("SvidSlot")
            .field("id", &cur.as_ref().map(|c| c.id.clone()))
            .finish()
    }
}

impl SvidSlot {
    /// An empty slot (fails closed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Install `svid` as the one presented from now on. The key is loaded through the FIPS
    /// module's key provider (the same for every [`CryptoPolicy`]: policies differ in suites
    /// and groups, never in how keys are held).
    pub fn set(&self, svid: &Svid) -> Result<(), Error> {
        let certified = CertifiedKey::from_der(
            svid.chain().to_vec(),
            svid.key().to_rustls(),
            &CryptoPolicy::default().provider(),
        )
        .map_err(|e| Error::Key(format!("rustls refused the SVID key: {e}")))?;
        self.current.store(Some(Arc::new(CurrentSvid {
            certified: Arc::new(certified),
            id: svid.id().clone(),
            not_after: svid.not_after(),
        })));
        Ok(())
    }

    /// Remove the SVID: handshakes fail closed until the next [`SvidSlot::set`].
    pub fn clear(&self) {
        self.current.store(None);
    }

    /// The current SVID, if any.
    pub fn current(&self) -> Option<Arc<CurrentSvid>> {
        self.current.load_full()
    }

    /// Seconds until the current SVID expires (negative once expired), if there is one.
    pub fn seconds_to_expiry(&self, now: SystemTime) -> Option<f64> {
        let cur = self.current.load();
        let cur = cur.as_ref()?;
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        };
        Some(secs(cur.not_after) - secs(now))
    }

    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.certified.clone())
    }
}

impl ResolvesServerCert for SvidSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for SvidSlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// A FIPS server config that presents `slot`'s SVID and requires a client SVID that chains to
/// `trust` and passes `authorizer`. Fails unless the config reports `fips()`.
pub fn server_config(
    policy: &CryptoPolicy,
    trust: TrustStore,
    authorizer: Authorizer,
    slot: Arc<SvidSlot>,
) -> Result<ServerConfig, Error> {
    let verifier = Arc::new(SpiffeVerifier::new(trust, authorizer));
    Ok(policy.server_config(verifier, slot)?)
}

/// A FIPS client config that presents `slot`'s SVID and requires a server SVID that chains to
/// `trust` and passes `authorizer`. Fails unless the config reports `fips()`.
pub fn client_config(
    policy: &CryptoPolicy,
    trust: TrustStore,
    authorizer: Authorizer,
    slot: Arc<SvidSlot>,
) -> Result<ClientConfig, Error> {
    let verifier = Arc::new(SpiffeVerifier::new(trust, authorizer));
    Ok(policy.client_config(verifier, slot)?)
}

/// When the certificate the peer of a finished handshake presented expires: the latest moment
/// a connection it authenticated may still be used.
pub fn peer_not_after(conn: &rustls::CommonState) -> Option<std::time::SystemTime> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| svid::peer_not_after(leaf).ok())
}

/// The SPIFFE ID of the peer of a finished handshake (its chain was verified by a
/// [`SpiffeVerifier`]).
pub fn peer_spiffe_id(conn: &rustls::CommonState) -> Option<SpiffeId> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| svid::peer_id(leaf).ok())
}
