//! One backoff for every retry (serving, registering), with the logging
//! rule: a new error is logged once at its level, a repeat of the same
//! error only at debug. And the registration decision, keyed on the typed
//! cause (gRPC status code), never on an error's text.

use std::time::Duration;

/// First delay after a failure.
pub const START: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
pub const MAX: Duration = Duration::from_secs(5);

/// Exponential backoff from [`START`] to [`MAX`], remembering the error
/// last logged.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    start: Duration,
    max: Duration,
    last: Option<String>,
}

/// What to do after one failure.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// Try again after this long.
    pub delay: Duration,
    /// The same error as last time: log it at debug only.
    pub repeat: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::up_to(START, MAX)
    }
}

impl Backoff {
    /// A backoff from `start` doubling to `max` (the API server is retried
    /// more slowly than the local kubelet).
    pub fn up_to(start: Duration, max: Duration) -> Backoff {
        Backoff {
            next: start,
            start,
            max,
            last: None,
        }
    }

    /// A success, or a fresh start: the next failure waits the first delay
    /// again; the error last logged is forgotten.
    pub fn reset(&mut self) {
        *self = Backoff::up_to(self.start, self.max);
    }

    /// Records a failure described by `error`.
    pub fn failed(&mut self, error: &str) -> Failure {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let repeat = self.last.as_deref() == Some(error);
        if !repeat {
            self.last = Some(error.to_string());
        }
        Failure { delay, repeat }
    }
}

/// A refused connection to a `kubelet.sock` that was just created (it
/// exists a moment before its server listens) is retried this often…
pub const QUICK_RETRY: Duration = Duration::from_millis(5);
/// …this many times, before the backoff.
pub const QUICK_RETRIES: u32 = 20;

/// Why a Register call failed, as gRPC typed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterError {
    /// The status code (`None`: the call could not even be started).
    pub code: Option<grpcio::RpcStatusCode>,
    pub message: String,
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RegisterError {}

impl From<grpcio::Error> for RegisterError {
    fn from(e: grpcio::Error) -> Self {
        match e {
            grpcio::Error::RpcFailure(status) => RegisterError {
                code: Some(status.code()),
                message: status.message().to_string(),
            },
            other => RegisterError {
                code: None,
                message: other.to_string(),
            },
        }
    }
}

/// The next step after a failed Register.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Not listening yet: again after [`QUICK_RETRY`], not logged.
    Quick,
    /// Back off, logging as [`Backoff::failed`] says.
    Backoff,
}

/// Decides how to retry a failed Register: an unavailable kubelet (the
/// connection refused, as when its socket is not listening yet) gets up to
/// [`QUICK_RETRIES`] quick retries, counted by `quick_used`; anything else,
/// or more of it, backs off.
pub fn after_register_failure(e: &RegisterError, quick_used: u32) -> Next {
    if e.code == Some(grpcio::RpcStatusCode::UNAVAILABLE) && quick_used < QUICK_RETRIES {
        Next::Quick
    } else {
        Next::Backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpcio::RpcStatusCode;

    #[test]
    fn backoff_doubles_to_the_cap_and_logs_a_repeat_once() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.failed("x").delay).collect();
        assert_eq!(delays[0], START);
        assert_eq!(delays[1], START * 2);
        assert_eq!(*delays.last().unwrap(), MAX);
        let mut b = Backoff::default();
        assert!(!b.failed("a").repeat);
        assert!(b.failed("a").repeat);
        assert!(!b.failed("b").repeat, "a different error is logged");
        b.reset();
        assert_eq!(
            b.failed("b"),
            Failure {
                delay: START,
                repeat: false
            }
        );
    }

    #[test]
    fn registration_retries_by_status_code() {
        let refused = RegisterError {
            code: Some(RpcStatusCode::UNAVAILABLE),
            message: "failed to connect to all addresses".into(),
        };
        assert_eq!(after_register_failure(&refused, 0), Next::Quick);
        assert_eq!(
            after_register_failure(&refused, QUICK_RETRIES - 1),
            Next::Quick
        );
        assert_eq!(
            after_register_failure(&refused, QUICK_RETRIES),
            Next::Backoff
        );
        // The text does not matter; the code does.
        let deadline = RegisterError {
            code: Some(RpcStatusCode::DEADLINE_EXCEEDED),
            message: "Connection refused".into(),
        };
        assert_eq!(after_register_failure(&deadline, 0), Next::Backoff);
        let rejected = RegisterError {
            code: Some(RpcStatusCode::UNKNOWN),
            message: "the ResourceName is invalid".into(),
        };
        assert_eq!(after_register_failure(&rejected, 0), Next::Backoff);
        assert_eq!(
            rejected.to_string(),
            "2-UNKNOWN: the ResourceName is invalid"
        );
    }
}
