//! Which members vote, sans-IO: the leader asks this after every membership or health change
//! and applies at most one change at a time.
//!
//! - Voters are kept at the largest odd number not above the configured count that the healthy
//!   members allow (an even count tolerates no more failures than the odd one below it and
//!   needs a larger quorum).
//! - A voter unreachable for longer than the replacement delay is swapped for a healthy
//!   non-voter, one for one.
//! - Nodes marked `never` do not vote; `prefer` nodes are picked first, then the lowest ids.
//! - Voters are never removed just because a non-voter is healthier, and never below the
//!   configured count unless there are more than it (a lowered setting).
//! - A non-voter silent for the forget delay leaves the membership (a diskless node that
//!   rebooted is back under a new id; a retired machine is gone for good), once the voters are
//!   right.

use std::collections::BTreeSet;
use std::time::Duration;

pub use crate::formation::Hint;
use crate::formation::NodeId;

/// What the leader knows about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub voter: bool,
    pub hint: Hint,
    /// How long since the leader last heard from it (`None`: it is the leader).
    pub silent_for: Option<Duration>,
    /// Whether its log is close enough to the leader's to vote without stalling commits.
    pub caught_up: bool,
}

/// The voter policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The configured number of voters (1, 3, 5 or 7).
    pub voters: usize,
    /// A member silent for this long is unhealthy and may be replaced.
    pub unhealthy_after: Duration,
    /// A voter silent for this long is replaced when a healthy non-voter can take its place.
    pub replace_after: Duration,
    /// A non-voter silent for this long is removed from the membership, and any node's record
    /// silent this long outside the membership from the state.
    pub forget_after: Duration,
}

impl Member {
    fn healthy(&self, policy: &Policy) -> bool {
        self.silent_for.is_none_or(|d| d < policy.unhealthy_after)
    }

    fn candidate(&self, policy: &Policy) -> bool {
        !self.voter && self.hint != Hint::Never && self.caught_up && self.healthy(policy)
    }
}

/// The voter set the cluster should move to next, or `None` if the current one is right.
pub fn next_voters(members: &[Member], policy: &Policy) -> Option<BTreeSet<NodeId>> {
    let voters: BTreeSet<NodeId> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    let mut candidates: Vec<&Member> = members.iter().filter(|m| m.candidate(policy)).collect();
    candidates.sort_by_key(|m| (m.hint, m.id));

    // Too many voters (the setting was lowered): drop the unhealthy first, then the highest ids.
    if voters.len() > policy.voters {
        let mut keep: Vec<&Member> = members.iter().filter(|m| m.voter).collect();
        keep.sort_by_key(|m| (!m.healthy(policy), m.silent_for.is_some(), m.id));
        let target = largest_odd_at_most(policy.voters).max(1);
        return Some(keep.iter().take(target).map(|m| m.id).collect());
    }

    // Replace the voter silent longest, if it has been silent long enough.
    let dead = members
        .iter()
        .filter(|m| m.voter)
        .filter(|m| m.silent_for.is_some_and(|d| d >= policy.replace_after))
        .max_by_key(|m| (m.silent_for, std::cmp::Reverse(m.id)));
    if let (Some(dead), Some(fresh)) = (dead, candidates.first()) {
        let mut next = voters.clone();
        next.remove(&dead.id);
        next.insert(fresh.id);
        return Some(next);
    }

    // Grow to the largest odd count the configuration and the candidates allow.
    let reachable = voters.len() + candidates.len();
    let want = largest_odd_at_most(policy.voters.min(reachable));
    if want > voters.len() {
        let mut next = voters.clone();
        next.extend(candidates.iter().take(want - voters.len()).map(|m| m.id));
        return Some(next);
    }
    None
}

/// The non-voter to remove from the membership next, if one has been silent for the forget
/// delay (the longest silent first). Ask only when [`next_voters`] has nothing to change.
pub fn forgotten(members: &[Member], policy: &Policy) -> Option<NodeId> {
    members
        .iter()
        .filter(|m| !m.voter)
        .filter(|m| m.silent_for.is_some_and(|d| d >= policy.forget_after))
        .max_by_key(|m| (m.silent_for, std::cmp::Reverse(m.id)))
        .map(|m| m.id)
}

/// The largest odd number not above `n` (0 for 0): an even voter count tolerates no more
/// failures than the odd one below it.
pub fn largest_odd_at_most(n: usize) -> usize {
    if n == 0 { 0 } else { n - 1 + n % 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        voters: 3,
        unhealthy_after: Duration::from_secs(3),
        replace_after: Duration::from_secs(30),
        forget_after: Duration::from_secs(600),
    };

    fn member(id: NodeId, voter: bool) -> Member {
        Member {
            id,
            voter,
            hint: Hint::Auto,
            silent_for: Some(Duration::from_millis(100)),
            caught_up: true,
        }
    }

    fn set(ids: &[NodeId]) -> Option<BTreeSet<NodeId>> {
        Some(ids.iter().copied().collect())
    }

    #[test]
    fn a_lone_voter_grows_to_three_only_when_two_can_join() {
        let mut m = vec![member(1, true), member(2, false)];
        // One voter and one candidate: two voters would need both for a quorum.
        assert_eq!(next_voters(&m, &POLICY), None);
        m.push(member(3, false));
        assert_eq!(next_voters(&m, &POLICY), set(&[1, 2, 3]));
    }

    #[test]
    fn voters_stay_at_the_configured_count() {
        let m: Vec<Member> = (1..=6).map(|id| member(id, id <= 3)).collect();
        assert_eq!(next_voters(&m, &POLICY), None);
        let five = Policy {
            voters: 5,
            ..POLICY
        };
        assert_eq!(next_voters(&m, &five), set(&[1, 2, 3, 4, 5]));
    }

    #[test]
    fn four_nodes_with_five_wanted_keep_three_voters() {
        let five = Policy {
            voters: 5,
            ..POLICY
        };
        let m: Vec<Member> = (1..=4).map(|id| member(id, id <= 3)).collect();
        assert_eq!(next_voters(&m, &five), None);
    }

    #[test]
    fn a_voter_silent_past_the_delay_is_replaced_by_a_healthy_non_voter() {
        let mut m: Vec<Member> = (1..=4).map(|id| member(id, id <= 3)).collect();
        m[1].silent_for = Some(Duration::from_secs(29));
        assert_eq!(next_voters(&m, &POLICY), None, "not yet");
        m[1].silent_for = Some(Duration::from_secs(31));
        assert_eq!(next_voters(&m, &POLICY), set(&[1, 3, 4]));
        // No healthy non-voter: the dead voter stays (removing it would leave two).
        m[3].silent_for = Some(Duration::from_secs(5));
        assert_eq!(next_voters(&m, &POLICY), None);
    }

    #[test]
    fn hints_and_catching_up_decide_who_is_promoted() {
        let mut m = vec![
            member(1, true),
            member(2, false),
            member(3, false),
            member(4, false),
            member(5, false),
        ];
        m[1].hint = Hint::Never;
        m[4].hint = Hint::Prefer;
        m[2].caught_up = false;
        assert_eq!(next_voters(&m, &POLICY), set(&[1, 4, 5]));
    }

    #[test]
    fn a_lowered_setting_drops_unhealthy_voters_first() {
        let mut m: Vec<Member> = (1..=5).map(|id| member(id, true)).collect();
        m[0].silent_for = None; // the leader
        m[1].silent_for = Some(Duration::from_secs(10));
        assert_eq!(next_voters(&m, &POLICY), set(&[1, 3, 4]));
    }
}

#[cfg(test)]
mod forget_tests {
    use super::*;

    #[test]
    fn silent_non_voters_are_forgotten_longest_silent_first() {
        let policy = Policy {
            voters: 3,
            unhealthy_after: Duration::from_secs(3),
            replace_after: Duration::from_secs(30),
            forget_after: Duration::from_secs(600),
        };
        let member = |id, voter, silent: u64| Member {
            id,
            voter,
            hint: Hint::Auto,
            silent_for: Some(Duration::from_secs(silent)),
            caught_up: true,
        };
        let mut m = vec![
            member(1, true, 0),
            member(2, true, 0),
            member(3, true, 900),
            member(4, false, 599),
        ];
        assert_eq!(
            forgotten(&m, &policy),
            None,
            "a silent voter is replaced, not forgotten"
        );
        m.push(member(5, false, 700));
        m.push(member(6, false, 800));
        assert_eq!(forgotten(&m, &policy), Some(6));
        m.retain(|x| x.id != 6);
        assert_eq!(forgotten(&m, &policy), Some(5));
        // The leader (never silent) is never forgotten.
        let leader = Member {
            silent_for: None,
            ..member(7, false, 0)
        };
        assert_eq!(forgotten(&[leader], &policy), None);
    }
}
