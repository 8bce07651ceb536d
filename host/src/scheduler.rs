//! Which queued jobs transfer now (SPEC §2; BITS's scheduling).
//!
//! Foreground jobs all run at once. Background jobs share a global number of
//! transfer slots by priority (high, normal, low); jobs of equal priority
//! take turns: a running job whose time slice is spent gives its slot to a
//! waiting job of the same priority that has waited longer. The decision is
//! a pure function of the candidates, so it can be checked on its own.

use crate::job::Priority;
use std::time::Duration;

/// A job the scheduler may run: queued, or already running.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub priority: Priority,
    /// `Some(since)` when it is transferring now (monotonic time).
    pub running_since: Option<Duration>,
    /// When it last got a slot (monotonic); `None` if never.
    pub last_started: Option<Duration>,
}

/// What to change: jobs to start, and running jobs to send back to the queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub start: Vec<String>,
    pub preempt: Vec<String>,
}

/// Decides which candidates run, given `slots` background slots, the time
/// slice of equal-priority turns, and the monotonic time `now`.
pub fn plan(candidates: &[Candidate], slots: usize, slice: Duration, now: Duration) -> Plan {
    let mut plan = Plan::default();
    for c in candidates
        .iter()
        .filter(|c| c.priority == Priority::Foreground)
    {
        if c.running_since.is_none() {
            plan.start.push(c.id.clone());
        }
    }
    let mut background: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.priority != Priority::Foreground)
        .collect();
    // Priority first; then a running job within its slice keeps its place;
    // then whoever got a slot least recently (never first).
    background.sort_by_key(|c| {
        let keeps_slot = c
            .running_since
            .is_some_and(|since| now.saturating_sub(since) < slice);
        (
            c.priority,
            !keeps_slot,
            c.last_started.map_or(0, |t| t.as_nanos() + 1),
        )
    });
    for (rank, c) in background.iter().enumerate() {
        match (rank < slots, c.running_since.is_some()) {
            (true, false) => plan.start.push(c.id.clone()),
            (false, true) => plan.preempt.push(c.id.clone()),
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(
        id: &str,
        priority: Priority,
        running_since: Option<u64>,
        last_started: Option<u64>,
    ) -> Candidate {
        Candidate {
            id: id.into(),
            priority,
            running_since: running_since.map(Duration::from_secs),
            last_started: last_started.map(Duration::from_secs),
        }
    }

    const SLICE: Duration = Duration::from_secs(60);

    #[test]
    fn foreground_jobs_all_start_and_take_no_slot() {
        let jobs = [
            c("f1", Priority::Foreground, None, None),
            c("f2", Priority::Foreground, None, None),
            c("n", Priority::Normal, None, None),
        ];
        let p = plan(&jobs, 1, SLICE, Duration::from_secs(5));
        assert_eq!(p.start, ["f1", "f2", "n"]);
    }

    #[test]
    fn higher_priority_takes_the_slot() {
        let jobs = [
            c("low", Priority::Low, Some(0), Some(0)),
            c("high", Priority::High, None, None),
        ];
        let p = plan(&jobs, 1, SLICE, Duration::from_secs(1));
        assert_eq!(
            p,
            Plan {
                start: vec!["high".into()],
                preempt: vec!["low".into()]
            }
        );
    }

    #[test]
    fn equal_priorities_take_turns_after_a_slice() {
        let jobs = [
            c("a", Priority::Normal, Some(0), Some(0)),
            c("b", Priority::Normal, None, None),
        ];
        assert_eq!(
            plan(&jobs, 1, SLICE, Duration::from_secs(30)),
            Plan::default(),
            "a keeps its slice"
        );
        let p = plan(&jobs, 1, SLICE, Duration::from_secs(61));
        assert_eq!(
            p,
            Plan {
                start: vec!["b".into()],
                preempt: vec!["a".into()]
            }
        );
        // Later, b's slice is spent and a has waited longer.
        let jobs = [
            c("a", Priority::Normal, None, Some(0)),
            c("b", Priority::Normal, Some(61), Some(61)),
        ];
        let p = plan(&jobs, 1, SLICE, Duration::from_secs(130));
        assert_eq!(
            p,
            Plan {
                start: vec!["a".into()],
                preempt: vec!["b".into()]
            }
        );
    }

    #[test]
    fn a_spent_slice_without_rivals_keeps_running() {
        let jobs = [
            c("a", Priority::Normal, Some(0), Some(0)),
            c("low", Priority::Low, None, None),
        ];
        assert_eq!(
            plan(&jobs, 1, SLICE, Duration::from_secs(500)),
            Plan::default()
        );
    }
}
