//! A sink's rate limit: a pure token bucket (kept as a theoretical arrival time) that takes
//! `now` and says when reserved tokens may be spent.
//!
//! The bucket holds `burst = max(1, rate × 10 ms)` tokens. That absorbs the timer's
//! millisecond granularity at high rates, and is small enough that the rate over any window
//! of a second or more stays within 1% of the limit (a bucket of a full second's tokens
//! would let a queued backlog through at twice the rate for that first second).
//! Imports `config` only.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// The window of tokens the bucket holds.
const BURST_WINDOW: f64 = 0.010;

/// One sink's token bucket.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// When the bucket would be empty again with nothing more reserved.
    tat: Option<Instant>,
}

impl RateLimiter {
    /// A full bucket for `rate`.
    pub fn new(rate: RateLimit) -> Self {
        let per_second = rate.per_second();
        let burst = (per_second * BURST_WINDOW).floor().max(1.0);
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            // At most 1,000,000/s × 10 ms, so it fits.
            burst: burst.min(f64::from(u32::MAX)) as u32,
            tat: None,
        }
    }

    /// The bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Reserves `n` tokens at `now`; returns when they may be spent (`now` when at once).
    pub fn reserve(&mut self, now: Instant, n: u32) -> Instant {
        let start = self.tat.map_or(now, |tat| tat.max(now));
        let tat = start + self.interval * n;
        self.tat = Some(tat);
        tat.checked_sub(self.interval * self.burst)
            .map_or(now, |at| at.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(text: &str) -> RateLimiter {
        RateLimiter::new(RateLimit::parse(text).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_spaced_at_the_rate() {
        let mut l = limiter("50/s");
        assert_eq!(l.burst(), 1);
        let t0 = Instant::now();
        let at: Vec<Duration> = (0..4).map(|_| l.reserve(t0, 1) - t0).collect();
        let ms = Duration::from_millis;
        assert_eq!(at, [ms(0), ms(20), ms(40), ms(60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_rate_holds() {
        let mut l = limiter("1000/s");
        assert_eq!(l.burst(), 10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.reserve(t0, 1), t0);
        }
        assert_eq!(l.reserve(t0, 1) - t0, Duration::from_millis(1));
        assert_eq!(l.reserve(t0, 5) - t0, Duration::from_millis(6));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_but_no_further() {
        let mut l = limiter("50/s");
        let t0 = Instant::now();
        l.reserve(t0, 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(l.reserve(now, 1), now);
        assert_eq!(l.reserve(now, 1) - now, Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_window_keeps_the_rate() {
        let mut l = limiter("30/m");
        let t0 = Instant::now();
        let last = (0..31).map(|_| l.reserve(t0, 1)).last().unwrap();
        assert_eq!(last - t0, Duration::from_secs(60));
    }
}
