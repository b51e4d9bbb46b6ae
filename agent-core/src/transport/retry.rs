//! When and how soon to try the collector again.
//!
//! Status codes are classified after OTLP's exporters: the codes that mean
//! "try again" (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED,
//! OUT_OF_RANGE, DATA_LOSS, and RESOURCE_EXHAUSTED when the server says when)
//! back off exponentially with jitter, and so do UNKNOWN and INTERNAL, which
//! is how a broken HTTP/2 connection surfaces; the ones that mean "this will
//! not work until someone changes something" (UNAUTHENTICATED,
//! PERMISSION_DENIED, INVALID_ARGUMENT, UNIMPLEMENTED, ...) wait the longest
//! delay and log an error. Data is never thrown away for either: it stays in
//! the spool.

use std::time::Duration;

use sightline_proto::metadata::RETRY_AFTER_MS;
use tonic::{Code, Status};

/// What to do after a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Transient: back off and try again.
    Backoff,
    /// The collector asked for this much quiet.
    After(Duration),
    /// Will not succeed until someone acts; wait long and say why.
    Refused(String),
}

/// Classifies a gRPC status.
pub fn classify(status: &Status) -> Retry {
    let retry_after = status
        .metadata()
        .get(RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    match status.code() {
        Code::ResourceExhausted => match retry_after {
            Some(d) => Retry::After(d),
            None => Retry::Refused(format!(
                "the collector is out of resources: {}",
                status.message()
            )),
        },
        Code::Unauthenticated => Retry::Refused(format!(
            "the collector refused the license: {}",
            status.message()
        )),
        Code::PermissionDenied => {
            Retry::Refused(format!("the collector denied access: {}", status.message()))
        }
        // Someone must change something (the collector, or this agent's
        // version) before this can work.
        code @ (Code::InvalidArgument
        | Code::Unimplemented
        | Code::FailedPrecondition
        | Code::NotFound) => Retry::Refused(format!(
            "the collector answered {code:?}: {}",
            status.message()
        )),
        // UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE,
        // DATA_LOSS as OTLP retries them, and UNKNOWN and INTERNAL too: a
        // collector killed mid-stream shows up as an HTTP/2 error with one
        // of those codes, and data waits in the spool either way.
        _ => retry_after.map_or(Retry::Backoff, Retry::After),
    }
}

/// Exponential backoff with jitter: each delay is drawn between half and
/// all of `initial * 2^attempt`, capped at `max`, so a fleet that lost its
/// collector at the same moment does not come back at the same moment.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// The longest delay, jittered (for refusals).
    pub fn max_delay(&self) -> Duration {
        let half = self.max / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn transient_codes_back_off_and_refusals_do_not() {
        assert_eq!(classify(&Status::unavailable("down")), Retry::Backoff);
        assert_eq!(classify(&Status::deadline_exceeded("slow")), Retry::Backoff);
        assert_eq!(classify(&Status::aborted("x")), Retry::Backoff);
        assert!(
            matches!(classify(&Status::unauthenticated("unknown license")), Retry::Refused(m) if m.contains("unknown license"))
        );
        assert!(matches!(
            classify(&Status::invalid_argument("x")),
            Retry::Refused(_)
        ));
        // A terminated agent (issue 10) is refused this way: it waits its
        // longest delay between attempts, never spins, keeps its spool.
        assert!(
            matches!(classify(&Status::permission_denied("agent 7 was terminated")), Retry::Refused(m) if m.contains("was terminated"))
        );
        assert!(matches!(
            classify(&Status::resource_exhausted("busy")),
            Retry::Refused(_)
        ));
    }

    #[test]
    fn retry_after_from_the_collector_wins() {
        let mut status = Status::resource_exhausted("busy");
        status
            .metadata_mut()
            .insert(RETRY_AFTER_MS, MetadataValue::from_static("1500"));
        assert_eq!(classify(&status), Retry::After(Duration::from_millis(1500)));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.next_delay());
        }
        assert!(
            ceilings[0] >= Duration::from_millis(50) && ceilings[0] <= Duration::from_millis(100)
        );
        assert!(
            ceilings[3] >= Duration::from_millis(400) && ceilings[3] <= Duration::from_millis(800)
        );
        assert!(ceilings.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(ceilings[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
