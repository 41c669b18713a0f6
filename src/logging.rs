//! Structured logging: one JSON object per line on stdout (`time`, `level`, `message`, then the fields), the
//! shape CloudWatch Logs and most log shippers index without a parser.
//!
//! Records go through slog-async with a large channel that blocks rather than drops under a burst; the returned
//! [`LogGuard`] flushes the channel when dropped, so keep it alive until the process exits.

use slog::{o, Drain, Logger};
use std::io::Write;

/// Flushes buffered log records when dropped.
pub struct LogGuard(Option<slog_async::AsyncGuard>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.0.take());
        let _ = std::io::stdout().flush();
    }
}

/// Stdout that writes each complete line with one locked write, so log lines never interleave with other
/// line-oriented output of the process (the EMF metrics sink).
#[derive(Debug, Default)]
pub struct StdoutLines {
    pending: Vec<u8>,
}

impl Write for StdoutLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(last_newline) = self.pending.iter().rposition(|&b| b == b'\n') {
            let rest = self.pending.split_off(last_newline + 1);
            let complete = std::mem::replace(&mut self.pending, rest);
            std::io::stdout().lock().write_all(&complete)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            std::io::stdout()
                .lock()
                .write_all(&std::mem::take(&mut self.pending))?;
        }
        std::io::stdout().flush()
    }
}

/// Builds the process logger writing JSON lines to `out` at `level` and above.
pub fn json_logger<W: Write + Send + 'static>(out: W, level: slog::Level) -> (Logger, LogGuard) {
    let json = slog_json::Json::new(out)
        .add_key_value(o!(
            "message" => slog::PushFnValue(|record, ser| ser.emit(record.msg())),
            "level" => slog::FnValue(|record| record.level().as_str()),
            "time" => slog::PushFnValue(|_, ser| ser.emit(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        ))
        .build()
        .fuse();
    let (drain, guard) = slog_async::Async::new(json)
        .chan_size(16 * 1024)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .build_with_guard();
    let drain = slog::LevelFilter::new(drain.fuse(), level).fuse();
    (
        Logger::root(drain, o!("service" => "coworking-analytics")),
        LogGuard(Some(guard)),
    )
}

/// A logger that discards everything (library tests that do not look at logs).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
