//! The daemons' log line: `2026-11-21T15:39:13.227555Z  INFO smtp message msgid=…`,
//! the shape of tracing-subscriber's full format without the target, written piece by
//! piece into the line buffer.
//!
//! The full format cost about 10,000 instructions a line (its timestamp, padding and
//! escaping go through the formatting machinery a character at a time); the SMTP server
//! writes five lines for every message it relays, which made logging a seventh of its
//! user-space work. This writes the same line for a fraction of that.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct LogLine;

impl<S, N> FormatEvent<S, N> for LogLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        w.write_str(std::str::from_utf8(&timestamp(SystemTime::now())).unwrap_or_default())?;
        let level = *event.metadata().level();
        let name = match level {
            Level::TRACE => "TRACE",
            Level::DEBUG => "DEBUG",
            Level::INFO => " INFO",
            Level::WARN => " WARN",
            Level::ERROR => "ERROR",
        };
        if w.has_ansi_escapes() {
            let color = match level {
                Level::TRACE => "35",
                Level::DEBUG => "34",
                Level::INFO => "32",
                Level::WARN => "33",
                Level::ERROR => "31",
            };
            write!(w, " \x1b[{color}m{name}\x1b[0m ")?;
        } else {
            w.write_char(' ')?;
            w.write_str(name)?;
            w.write_char(' ')?;
        }
        let mut fields = Fields {
            out: Escaping(&mut w),
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// `message` first and bare, then ` name=value` (values in their `Debug` form, so text
/// is quoted), as tracing-subscriber's default fields.
struct Fields<'a, 'w> {
    out: Escaping<'a, 'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.out, "{sep}{value:?}")
        } else {
            write!(self.out, "{sep}{}={value:?}", field.name())
        };
    }
}

/// Writes text with the control characters a terminal acts on (ESC, BEL, backspace,
/// form feed, DEL, the C1 range) spelled out, as tracing-subscriber does, so text from
/// a client cannot rewrite the operator's screen. Text without any goes through whole.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

fn harmful(c: char) -> bool {
    matches!(
        c,
        '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
    )
}

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Bytes, not chars, for the common case: an ASCII byte is its own char, and 0xC2
        // leads every C1 character (and a few harmless ones, which the slow path then
        // tells apart).
        if !s
            .bytes()
            .any(|b| b == 0xc2 || (b.is_ascii() && harmful(char::from(b))))
        {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c if harmful(c) => write!(self.0, "\\x{:02x}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// RFC 3339 in UTC with microseconds: `2026-11-21T15:39:13.227555Z`.
fn timestamp(t: SystemTime) -> [u8; 27] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, day) = mta::clock::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    for (range, v) in [
        (0..4, y.clamp(0, 9999) as u64),
        (5..7, u64::from(mo)),
        (8..10, u64::from(day)),
        (11..13, (s / 3600) as u64),
        (14..16, (s / 60 % 60) as u64),
        (17..19, (s % 60) as u64),
        (20..26, u64::from(d.subsec_micros())),
    ] {
        let mut v = v;
        for digit in out[range].iter_mut().rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `f` logs, timestamps cut off.
    fn lines(ansi: bool, f: impl FnOnce()) -> Vec<String> {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(ansi)
            .event_format(LogLine)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                assert_eq!(&l[26..27], "Z", "{l}");
                l[27..].to_string()
            })
            .collect()
    }

    #[test]
    fn lines_have_the_level_the_message_and_then_the_fields() {
        let msgid = "061b02db";
        let got = lines(false, || {
            tracing::info!("f718571e3a898b3f smtp message msgid={msgid} size=2299");
            tracing::warn!(names = %"mx.example.org", failures = 2, "ACME order failed");
            tracing::error!(directory = "https://ca/dir", "cannot reach the CA");
            tracing::debug!("open file limit {}", 1024);
            tracing::trace!(messages = 3, "queue: commit round");
        });
        assert_eq!(
            got,
            vec![
                "  INFO f718571e3a898b3f smtp message msgid=061b02db size=2299",
                "  WARN ACME order failed names=mx.example.org failures=2",
                " ERROR cannot reach the CA directory=\"https://ca/dir\"",
                " DEBUG open file limit 1024",
                " TRACE queue: commit round messages=3",
            ]
        );
    }

    #[test]
    fn terminal_controls_from_clients_are_spelled_out() {
        let helo = "evil\x1b[2J\x07\u{9b}host";
        let got = lines(false, || tracing::info!("smtp helo {helo}"));
        assert_eq!(got, vec!["  INFO smtp helo evil\\x1b[2J\\x07\\u{9b}host"]);
    }

    #[test]
    fn a_c1_control_alone_is_spelled_out_and_other_non_ascii_text_is_not() {
        let got = lines(false, || {
            tracing::info!("smtp helo a\u{85}b");
            tracing::info!("smtp helo £5 café ©");
        });
        assert_eq!(
            got,
            vec!["  INFO smtp helo a\\u{85}b", "  INFO smtp helo £5 café ©"]
        );
    }

    #[test]
    fn on_a_terminal_the_level_is_coloured() {
        let got = lines(true, || tracing::warn!("careful"));
        assert_eq!(got, vec![" \x1b[33m WARN\x1b[0m careful"]);
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_794_953_227_555);
        assert_eq!(&timestamp(t), b"2026-11-27T15:55:53.227555Z");
        assert_eq!(&timestamp(UNIX_EPOCH), b"1970-01-01T00:00:00.000000Z");
    }
}
