//! [`ConnTimer`]: one timer a client connection reuses for whatever it waits on in turn (the
//! next request head, then that request's instance), instead of a new timer per wait.
//!
//! A tokio timer costs a registration in the timer wheel and a removal each time it is made or
//! moved. Deadlines here nearly always move later, so the timer is left where it is: when it
//! fires before the current deadline it is re-armed for it (about once per header timeout on a
//! busy connection), and it is only moved earlier when a wait has a shorter deadline than the
//! one armed.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A deadline on a timer that is re-armed lazily (see the module docs).
pub(crate) struct ConnTimer<'a> {
    sleep: Pin<&'a mut Sleep>,
    deadline: Instant,
}

impl<'a> ConnTimer<'a> {
    /// A timer expiring at `sleep`'s deadline.
    pub(crate) fn new(sleep: Pin<&'a mut Sleep>) -> Self {
        let deadline = sleep.deadline();
        Self { sleep, deadline }
    }

    /// From now on, expires at `deadline`.
    pub(crate) fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Ready once the deadline set last has passed.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.sleep.deadline() >= self.deadline {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline that has since moved: wait for the current one.
            let deadline = self.deadline;
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Resolves once the deadline set last has passed.
    pub(crate) async fn expired(&mut self) {
        poll_fn(|cx| self.poll_expired(cx)).await;
    }

    /// `fut`'s output, or `None` if `deadline` passes first.
    pub(crate) async fn within<F: Future>(
        &mut self,
        deadline: Instant,
        fut: F,
    ) -> Option<F::Output> {
        self.set(deadline);
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            self.poll_expired(cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn deadlines_move_both_ways_and_fire_once_passed() {
        let start = Instant::now();
        let mut sleep = pin!(tokio::time::sleep_until(start + Duration::from_secs(10)));
        let mut timer = ConnTimer::new(sleep.as_mut());

        // A later deadline: the armed timer fires at 10 s, re-arms, and expires at 25 s.
        timer.set(start + Duration::from_secs(25));
        timer.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(25));

        // An earlier deadline than the one armed moves the timer in.
        timer.set(Instant::now() + Duration::from_secs(60));
        timer.set(Instant::now() + Duration::from_secs(2));
        let before = Instant::now();
        timer.expired().await;
        assert_eq!(Instant::now() - before, Duration::from_secs(2));

        // `within`: the work's output when it is first, `None` when the deadline is.
        let quick = timer
            .within(Instant::now() + Duration::from_secs(1), async { 7 })
            .await;
        assert_eq!(quick, Some(7));
        let slow = timer.within(
            Instant::now() + Duration::from_secs(1),
            tokio::time::sleep(Duration::from_secs(5)),
        );
        let before = Instant::now();
        assert_eq!(slow.await, None);
        assert_eq!(Instant::now() - before, Duration::from_secs(1));
    }
}
