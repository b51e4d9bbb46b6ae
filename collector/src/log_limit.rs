//! Rate-limited warnings, for what the network can make the collector log:
//! refused connections, unknown licenses. At most one line per
//! [`LogLimit::EVERY`] per kind, each saying how many were suppressed
//! since the last. Never blocks and never allocates per call.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One kind of warning's limiter.
#[derive(Debug, Default)]
pub struct LogLimit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// The shortest time between two lines of one kind.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A limiter that has logged nothing yet.
    pub const fn new() -> LogLimit {
        LogLimit {
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged
    /// now; `None` (and one more suppressed) otherwise.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return Some(0);
        };
        match state.last {
            Some(last) if now.duration_since(last) < LogLimit::EVERY => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_ten_seconds_counting_the_rest() {
        let limit = LogLimit::new();
        assert_eq!(limit.check(), Some(0), "the first is logged");
        for _ in 0..1000 {
            assert_eq!(limit.check(), None);
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(limit.check(), None, "not before ten seconds");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.check(), Some(1001), "says how many were suppressed");
        assert_eq!(limit.check(), None);
    }
}
