//! Process signals for node and proxy: the moving of bytes itself is the one forwarder's, in
//! `fipstun-transport`.

use std::io;

/// Wait for SIGTERM or SIGINT; returns the signal's name. The handlers are installed at once,
/// so a signal that arrives before this is awaited is not lost (nor kills the process).
pub(crate) fn termination() -> io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
