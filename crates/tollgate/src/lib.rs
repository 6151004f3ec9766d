//! The `tollgate` binary's library: command-line surface and process wiring. Kept as a
//! library so integration tests can run a whole gateway in-process on port 0.

/// Prints a line on stdout, ignoring a closed stdout (`tollgate serve | head -3` must
/// not take the gateway down).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod check;
pub mod cli;
pub mod client;
pub mod demo;
pub mod import;
pub mod serve;
pub mod ws;

/// Logs to stderr; `RUST_LOG` (e.g. `tollgate=debug`) overrides `--log`.
pub fn init_tracing(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rustls warns about what clients send (an IP address as SNI, as wrk and curl
        // do), on every handshake: nothing an operator can act on, and a flood under load.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},rustls=error")));
    // Colour codes only for a person at a terminal: a file, a pipe or journald gets
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Stderr).with_target(false).with_ansi(ansi);
    // JSON: one object per line (timestamp, level, fields, message) for log pipelines.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Standard error that never fails: a gateway must keep serving (and drain cleanly)
/// when whatever reads its logs goes away, so a broken log pipe loses log lines, not
/// the process (tracing-subscriber would otherwise report the failure on stderr, and
/// that report panics).
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
