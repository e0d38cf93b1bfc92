//! The span a connection's (or a UDP session's) task runs in.

use tracing::Span;

/// `span` when its level is enabled (debug logging), else the current span: the
/// forward's, which keeps the forward's name on the connection's events (they
/// name the client themselves). An enabled span per connection costs the log
/// subscriber an allocation and the formatting of its fields for every
/// connection, 4 % of a relay's instructions per short connection (callgrind),
/// at the default level where nothing prints it.
pub(crate) fn or_current(span: Span) -> Span {
    if span.is_disabled() {
        Span::current()
    } else {
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::{debug_span, info_span, Level};

    #[test]
    fn a_disabled_span_gives_way_to_the_current_one() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let forward = info_span!("forward", name = "web");
            let _in_forward = forward.enter();
            let chosen = or_current(debug_span!("conn", client = "192.0.2.1:4000"));
            assert_eq!(chosen.id(), forward.id());
            let conn = info_span!("conn");
            assert_eq!(or_current(conn.clone()).id(), conn.id());
        });
    }
}
