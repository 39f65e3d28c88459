//! The wall clock, in the unit complyd keeps time in: Unix milliseconds.

use crate::event::TimeMs;

/// Now, in Unix milliseconds.
pub fn now_ms() -> TimeMs {
    chrono::Utc::now().timestamp_millis()
}
