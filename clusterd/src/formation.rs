//! Zero-touch formation, sans-IO: announcements in, one action out.
//!
//! Every node starts in the *forming* phase and announces itself (on the LAN and to its seeds)
//! every few hundred milliseconds. The rules that make exactly one cluster:
//!
//! 1. A node that hears of an existing cluster (a `Member` announcement with the same cluster
//!    name) never forms one: it joins through the members it heard. (A node locked on the set
//!    that cluster was initialised with waits instead: its leader will contact it.)
//! 2. Otherwise, once it has announced itself for [`Timing::settle`] (so members of an existing
//!    cluster have had time to answer; a member answers every forming announcement at once),
//!    or once a peer proposes (that peer has settled), and it knows at least `expected`
//!    forming nodes (itself included), it *proposes* the `expected` lowest node ids among them,
//!    whether or not it is one of them. While a peer is locked on a set without this node, it
//!    proposes that set instead: the set becomes a cluster (which this node then joins) or
//!    times out.
//! 3. A node in its own proposal *locks* it when every forming node it knows proposes the same
//!    set. A locked node never proposes anything else, so each node belongs to at most one
//!    locked set; and a node that knew any member of a disjoint set could not have seen that
//!    member propose its own set, so two sets lock only on two sides that never heard each
//!    other (a partition, or nodes booted within one announcement of each other).
//! 4. The lowest id of a set initialises the cluster with exactly that set as voters, once
//!    every member of the set has been heard locked on it within [`Timing::peer_fresh`].
//!
//! Two initialised sets would need a node locked on both, which rule 3 forbids; so two
//! clusters can only form on two sides of a network partition that each hold `expected` nodes.
//!
//! A node that is not locked but hears a fresh peer locked on a set that includes it takes that
//! set (the peer saw it propose the set; its own later view may differ).
//!
//! A locked set can stall when one of its nodes dies before the cluster is initialised. A
//! locked node therefore unlocks when its set has not completed within
//! [`Timing::lock_timeout`] and its own consensus has never been contacted by a leader (the
//! driver reports that through [`Formation::contacted`]). A set with a silent node is never
//! taken over, so the survivors propose again without it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster: random, created with its data, never reused.
pub type NodeId = u64;

/// The timing of formation. The defaults suit a LAN; tests shrink or stretch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between two announcements while forming or joining.
    pub announce_every: Duration,
    /// Between two announcements once a member.
    pub member_announce_every: Duration,
    /// How long a node announces itself before it proposes a set.
    pub settle: Duration,
    /// A node not heard for this long is not counted as available.
    pub peer_fresh: Duration,
    /// How long a locked set may stall (with a silent member) before this node unlocks.
    pub lock_timeout: Duration,
    /// Between two join attempts.
    pub join_retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            announce_every: Duration::from_millis(100),
            member_announce_every: Duration::from_secs(1),
            // A member answers a forming announcement at once: on a LAN, 250 ms is dozens of
            // round trips. It delays only the first nodes (later ones settle when a peer
            // proposes) and a cluster of one.
            settle: Duration::from_millis(250),
            peer_fresh: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(10),
            join_retry: Duration::from_millis(500),
        }
    }
}

/// How this node takes part in formation, from its machine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cluster name; announcements for other names are ignored.
    pub cluster: String,
    /// How many nodes form the cluster together (at least 1).
    pub expected: u32,
    /// The most voters the cluster has (1, 3, 5 or 7).
    pub voters: u32,
    /// This node's wish about voting.
    pub hint: Hint,
    pub timing: Timing,
}

/// A node's wish about voting, from its machine configuration (`node.voter`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Hint {
    /// Picked before `auto` nodes.
    Prefer,
    #[default]
    Auto,
    /// Never a voter.
    Never,
}

/// What a node says about itself. The transport authenticates it with the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The cluster name from the machine configuration; others are ignored.
    pub cluster: String,
    pub node: NodeId,
    /// Where the node's peer service (consensus and joins) listens.
    pub addr: SocketAddr,
    /// Orders a node's announcements: `(incarnation, seq)` grows with each one, so a late
    /// duplicate never overwrites newer news. The incarnation changes on every start.
    pub incarnation: u64,
    pub seq: u64,
    /// The initial size this node was configured with.
    pub expected: u32,
    pub hint: Hint,
    pub state: Announced,
}

/// The phase a node announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Announced {
    /// Looking for peers; `proposal` once it knows enough of them.
    Forming {
        proposal: Option<BTreeSet<NodeId>>,
        locked: bool,
    },
    /// Asking to be added to an existing cluster.
    Joining,
    /// In the cluster `cluster_id`, whose leader it last saw.
    Member {
        cluster_id: u64,
        leader: Option<NodeId>,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Initialise consensus with exactly these voters, then add the learners (this node is the
    /// lowest id of the set they make together).
    Initialize {
        cluster_id: u64,
        voters: BTreeMap<NodeId, SocketAddr>,
        learners: BTreeMap<NodeId, SocketAddr>,
    },
    /// Ask one of these members (the leader first when known) to add this node.
    Join(Vec<SocketAddr>),
}

/// Where this node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Forming,
    /// Initialisation was requested; waiting for the driver to report membership. The node
    /// already announces itself as a member, so no peer forms anything else meanwhile.
    Initializing {
        cluster_id: u64,
    },
    Joining,
    Member {
        cluster_id: u64,
    },
}

#[derive(Debug, Clone)]
struct Peer {
    order: (u64, u64),
    addr: SocketAddr,
    hint: Hint,
    heard: Duration,
    state: Announced,
}

/// One node's side of formation.
#[derive(Debug)]
pub struct Formation {
    settings: Settings,
    me: NodeId,
    addr: SocketAddr,
    incarnation: u64,
    seq: u64,
    expected: usize,
    timing: Timing,
    started: Duration,
    peers: BTreeMap<NodeId, Peer>,
    proposal: Option<BTreeSet<NodeId>>,
    locked: Option<(BTreeSet<NodeId>, Duration)>,
    phase: Phase,
    leader: Option<NodeId>,
    contacted: bool,
    last_join: Option<Duration>,
}

impl Formation {
    /// A node that has no cluster yet. `incarnation` must grow from one start of the node to the
    /// next (the driver uses the wall clock at start); `now` is any monotonic clock, shared
    /// with later calls.
    pub fn new(
        settings: Settings,
        me: NodeId,
        addr: SocketAddr,
        incarnation: u64,
        now: Duration,
    ) -> Formation {
        Formation {
            me,
            addr,
            incarnation,
            seq: 0,
            expected: settings.expected.max(1) as usize,
            timing: settings.timing,
            settings,
            started: now,
            peers: BTreeMap::new(),
            proposal: None,
            locked: None,
            phase: Phase::Forming,
            leader: None,
            contacted: false,
            last_join: None,
        }
    }

    /// A node that already belongs to `cluster_id` (its consensus state survived a restart).
    pub fn member(
        settings: Settings,
        me: NodeId,
        addr: SocketAddr,
        incarnation: u64,
        cluster_id: u64,
        now: Duration,
    ) -> Formation {
        let mut f = Formation::new(settings, me, addr, incarnation, now);
        f.phase = Phase::Member { cluster_id };
        f
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The set this node is locked on, if any.
    pub fn locked(&self) -> Option<&BTreeSet<NodeId>> {
        self.locked.as_ref().map(|(set, _)| set)
    }

    /// Addresses of the nodes heard recently, for the driver's peer table.
    pub fn known(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.addr))
    }

    /// How often the driver should announce now.
    pub fn announce_every(&self) -> Duration {
        match self.phase {
            Phase::Member { .. } | Phase::Initializing { .. } => self.timing.member_announce_every,
            _ => self.timing.announce_every,
        }
    }

    /// The phase this node announces now.
    pub fn announced(&self) -> Announced {
        match &self.phase {
            Phase::Forming => Announced::Forming {
                proposal: self
                    .locked
                    .as_ref()
                    .map(|(set, _)| set.clone())
                    .or_else(|| self.proposal.clone()),
                locked: self.locked.is_some(),
            },
            Phase::Joining => Announced::Joining,
            Phase::Member { cluster_id } | Phase::Initializing { cluster_id } => {
                Announced::Member {
                    cluster_id: *cluster_id,
                    leader: self.leader,
                }
            }
        }
    }

    /// What to announce now (each call numbers a new announcement). The driver announces every
    /// [`Formation::announce_every`], and at once when [`Formation::announced`] changes, so a
    /// new proposal or lock reaches the peers without waiting for the next round.
    pub fn announcement(&mut self) -> Announcement {
        self.seq += 1;
        Announcement {
            cluster: self.settings.cluster.clone(),
            node: self.me,
            addr: self.addr,
            incarnation: self.incarnation,
            seq: self.seq,
            expected: self.expected as u32,
            hint: self.settings.hint,
            state: self.announced(),
        }
    }

    /// Takes in an announcement. Returns whether the sender should get an answer at once (a
    /// member answers a forming or joining node so it learns of the cluster in one round trip).
    pub fn receive(&mut self, a: Announcement, now: Duration) -> bool {
        if a.cluster != self.settings.cluster || a.node == self.me {
            return false;
        }
        let order = (a.incarnation, a.seq);
        if self.peers.get(&a.node).is_some_and(|p| p.order >= order) {
            return false;
        }
        let answer = matches!(
            self.phase,
            Phase::Member { .. } | Phase::Initializing { .. }
        ) && !matches!(a.state, Announced::Member { .. });
        self.peers.insert(
            a.node,
            Peer {
                order,
                addr: a.addr,
                hint: a.hint,
                heard: now,
                state: a.state,
            },
        );
        answer
    }

    /// The driver's consensus was contacted by a leader: this node is in a cluster, whatever
    /// formation thought.
    pub fn contacted(&mut self) {
        self.contacted = true;
    }

    /// The driver's consensus reports this node as a member of `cluster_id`, led by `leader`.
    pub fn set_member(&mut self, cluster_id: u64, leader: Option<NodeId>) {
        self.phase = Phase::Member { cluster_id };
        self.leader = leader;
        self.locked = None;
        self.proposal = None;
    }

    /// Advances formation; returns what the driver must do now, if anything.
    pub fn poll(&mut self, now: Duration) -> Option<Action> {
        match self.phase {
            Phase::Member { .. } | Phase::Initializing { .. } => None,
            Phase::Joining => self.poll_join(now),
            Phase::Forming => {
                // The cluster this node's own locked set is becoming: wait to be contacted.
                let own = self.locked.as_ref().map(|(set, _)| cluster_id(set));
                let other_cluster = self.members_heard(now).any(|(_, p)| {
                    !matches!(p.state, Announced::Member { cluster_id, .. } if Some(cluster_id) == own)
                });
                if !self.contacted && other_cluster {
                    self.phase = Phase::Joining;
                    self.locked = None;
                    self.proposal = None;
                    return self.poll_join(now);
                }
                self.poll_forming(now)
            }
        }
    }

    fn members_heard(&self, now: Duration) -> impl Iterator<Item = (NodeId, &Peer)> + '_ {
        self.peers
            .iter()
            .filter(move |(_, p)| {
                matches!(p.state, Announced::Member { .. })
                    && now.saturating_sub(p.heard) <= self.timing.peer_fresh
            })
            .map(|(id, p)| (*id, p))
    }

    fn poll_join(&mut self, now: Duration) -> Option<Action> {
        if let Some(last) = self.last_join
            && now.saturating_sub(last) < self.timing.join_retry
        {
            return None;
        }
        // The leader the members name first, then every member heard.
        let mut leaders = BTreeMap::<NodeId, usize>::new();
        let mut targets = Vec::new();
        for (id, peer) in self.members_heard(now) {
            if let Announced::Member {
                leader: Some(leader),
                ..
            } = peer.state
            {
                *leaders.entry(leader).or_default() += 1;
            }
            targets.push((id, peer.addr));
        }
        if targets.is_empty() {
            return None;
        }
        let leader = leaders
            .into_iter()
            .max_by_key(|(id, votes)| (*votes, std::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        targets.sort_by_key(|(id, _)| (Some(*id) != leader, *id));
        self.last_join = Some(now);
        Some(Action::Join(targets.into_iter().map(|(_, a)| a).collect()))
    }

    fn fresh(&self, peer: &Peer, now: Duration) -> bool {
        now.saturating_sub(peer.heard) <= self.timing.peer_fresh
    }

    fn locked_on(p: &Peer) -> Option<&BTreeSet<NodeId>> {
        match &p.state {
            Announced::Forming {
                proposal: Some(set),
                locked: true,
            } => Some(set),
            _ => None,
        }
    }

    fn poll_forming(&mut self, now: Duration) -> Option<Action> {
        if let Some((set, since)) = self.locked.clone() {
            return self.poll_locked(&set, since, now);
        }
        // A peer locked on a set with this node in it saw this node propose that set: take it,
        // unless one of its nodes has gone silent (then the set is abandoned by timeout).
        let adopt = self
            .peers
            .values()
            .filter(|p| self.fresh(p, now))
            .filter_map(Self::locked_on)
            .filter(|set| set.contains(&self.me))
            .filter(|set| {
                set.iter().all(|id| {
                    *id == self.me || self.peers.get(id).is_some_and(|p| self.fresh(p, now))
                })
            })
            .min()
            .cloned();
        if let Some(set) = adopt {
            self.proposal = Some(set.clone());
            self.locked = Some((set.clone(), now));
            return self.poll_locked(&set, now, now);
        }
        // Peers that propose have settled already; had a cluster answered them, they would be
        // joining it. So a node may propose before its own settle time once one of them does.
        let settled = now.saturating_sub(self.started) >= self.timing.settle
            || (self.expected > 1
                && self.peers.values().any(|p| {
                    self.fresh(p, now)
                        && matches!(
                            p.state,
                            Announced::Forming {
                                proposal: Some(_),
                                ..
                            }
                        )
                }));
        if !settled {
            return None;
        }
        // Another set is being formed: support it, and wait for it to become a cluster (which
        // this node then joins) or to time out.
        let foreign_lock = self
            .peers
            .values()
            .filter(|p| self.fresh(p, now))
            .filter_map(Self::locked_on)
            .filter(|set| !set.contains(&self.me))
            .min()
            .cloned();
        if let Some(set) = foreign_lock {
            self.proposal = Some(set);
            return None;
        }
        let forming: Vec<(NodeId, Option<&BTreeSet<NodeId>>)> = self
            .peers
            .iter()
            .filter(|(_, p)| self.fresh(p, now))
            .filter_map(|(id, p)| match &p.state {
                Announced::Forming { proposal, .. } => Some((*id, proposal.as_ref())),
                _ => None,
            })
            .collect();
        if forming.len() + 1 < self.expected {
            self.proposal = None;
            return None;
        }
        let mut available: BTreeSet<NodeId> = forming.iter().map(|(id, _)| *id).collect();
        available.insert(self.me);
        let proposal: BTreeSet<NodeId> = available.into_iter().take(self.expected).collect();
        self.proposal = Some(proposal.clone());
        // Agreement: every forming node this node knows proposes the same set. A node that
        // knew of a disjoint set's member could not have agreed to both, so two sets can only
        // lock on two sides that never heard each other.
        let agreed =
            proposal.contains(&self.me) && forming.iter().all(|(_, p)| *p == Some(&proposal));
        if agreed {
            self.locked = Some((proposal.clone(), now));
            return self.poll_locked(&proposal, now, now);
        }
        None
    }

    fn poll_locked(
        &mut self,
        set: &BTreeSet<NodeId>,
        since: Duration,
        now: Duration,
    ) -> Option<Action> {
        let all_locked = set.iter().all(|id| {
            *id == self.me
                || self
                    .peers
                    .get(id)
                    .is_some_and(|p| self.fresh(p, now) && Self::locked_on(p) == Some(set))
        });
        if all_locked && set.first() == Some(&self.me) {
            let members: Vec<(NodeId, SocketAddr, Hint)> = set
                .iter()
                .map(|id| match self.peers.get(id) {
                    Some(p) if *id != self.me => (*id, p.addr, p.hint),
                    _ => (*id, self.addr, self.settings.hint),
                })
                .collect();
            let chosen = initial_voters(
                members.iter().map(|(id, _, hint)| (*id, *hint)),
                self.settings.voters as usize,
            );
            let (voters, learners) = members
                .into_iter()
                .map(|(id, addr, _)| (id, addr))
                .partition(|(id, _)| chosen.contains(id));
            let cluster_id = cluster_id(set);
            self.phase = Phase::Initializing { cluster_id };
            return Some(Action::Initialize {
                cluster_id,
                voters,
                learners,
            });
        }
        // The set did not complete in time (a node died, or is locked on another set): start
        // over, unless a leader has already reached this node.
        if now.saturating_sub(since) >= self.timing.lock_timeout && !self.contacted {
            self.locked = None;
            self.proposal = None;
            self.peers
                .retain(|_, p| now.saturating_sub(p.heard) <= self.timing.peer_fresh);
        }
        None
    }
}

/// The id of the cluster a set of voters initialises: a hash of their ids, so the same set
/// always names the same cluster and two sets never (in practice) share one.
pub fn cluster_id(voters: &BTreeSet<NodeId>) -> u64 {
    // splitmix64 over the sorted ids.
    let mut h: u64 = 0x5348_4f41_4c00_0001;
    for id in voters {
        h ^= *id;
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h = z ^ (z >> 31);
    }
    h
}

/// The voters a new cluster starts with: the largest odd number of its members, not above
/// `max`, picked by hint (`prefer` first, `never` not at all) then lowest id; the lowest id
/// when every member says `never` (a cluster needs one voter).
pub fn initial_voters(
    members: impl IntoIterator<Item = (NodeId, Hint)>,
    max: usize,
) -> BTreeSet<NodeId> {
    let mut all: Vec<(Hint, NodeId)> = members.into_iter().map(|(id, h)| (h, id)).collect();
    all.sort();
    let eligible: Vec<NodeId> = all
        .iter()
        .filter(|(h, _)| *h != Hint::Never)
        .map(|(_, id)| *id)
        .collect();
    if eligible.is_empty() {
        return all.iter().map(|(_, id)| *id).min().into_iter().collect();
    }
    let count = crate::voters::largest_odd_at_most(eligible.len().min(max.max(1)));
    eligible.into_iter().take(count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings(expected: u32) -> Settings {
        Settings {
            cluster: "test".into(),
            expected,
            voters: 3,
            hint: Hint::Auto,
            timing: Timing::default(),
        }
    }

    fn addr(id: NodeId) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, id as u8], 7700))
    }

    fn node(id: NodeId, expected: u32) -> Formation {
        Formation::new(settings(expected), id, addr(id), 1, ms(0))
    }

    fn heard(f: &mut Formation, from: &mut Formation, now: Duration) {
        let a = from.announcement();
        f.receive(a, now);
    }

    #[test]
    fn a_lone_node_expecting_one_forms_after_settling() {
        let mut f = node(5, 1);
        assert_eq!(f.poll(ms(249)), None);
        match f.poll(ms(250)) {
            Some(Action::Initialize {
                voters, learners, ..
            }) => {
                assert_eq!(voters.keys().copied().collect::<Vec<_>>(), [5]);
                assert!(learners.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(f.announcement().state, Announced::Member { .. }));
    }

    #[test]
    fn a_node_that_hears_a_member_joins_through_the_leader_first() {
        let mut f = node(9, 1);
        let mut member = Formation::member(settings(1), 2, addr(2), 1, 77, ms(0));
        member.set_member(77, Some(3));
        let mut leader = Formation::member(settings(1), 3, addr(3), 1, 77, ms(0));
        leader.set_member(77, Some(3));
        heard(&mut f, &mut member, ms(10));
        heard(&mut f, &mut leader, ms(10));
        assert_eq!(f.poll(ms(20)), Some(Action::Join(vec![addr(3), addr(2)])));
        assert_eq!(f.phase(), &Phase::Joining);
        assert_eq!(f.poll(ms(100)), None, "retries wait for join_retry");
        assert!(f.poll(ms(520)).is_some());
    }

    #[test]
    fn a_member_answers_forming_nodes_but_not_members() {
        let mut member = Formation::member(settings(3), 2, addr(2), 1, 77, ms(0));
        let mut newcomer = node(4, 3);
        let mut other = Formation::member(settings(3), 3, addr(3), 1, 77, ms(0));
        assert!(member.receive(newcomer.announcement(), ms(5)));
        assert!(!member.receive(other.announcement(), ms(5)));
        let echo = member.announcement();
        assert!(!member.receive(echo, ms(5)), "its own echo");
    }

    #[test]
    fn three_nodes_agree_lock_and_the_lowest_initialises() {
        let mut nodes = [node(30, 3), node(10, 3), node(20, 3)];
        let mut actions = Vec::new();
        for t in (0..=1000).step_by(100) {
            let now = ms(t);
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        let a = nodes[j].announcement();
                        nodes[i].receive(a, now);
                    }
                }
            }
            for n in &mut nodes {
                if let Some(a) = n.poll(now) {
                    actions.push((n.node_id(), a));
                }
            }
        }
        assert_eq!(actions.len(), 1, "{actions:?}");
        let (by, Action::Initialize { voters, .. }) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(*by, 10);
        assert_eq!(voters.keys().copied().collect::<Vec<_>>(), [10, 20, 30]);
        assert_eq!(nodes[0].locked(), Some(&BTreeSet::from([10, 20, 30])));
    }

    #[test]
    fn a_late_duplicate_never_overwrites_newer_news() {
        let mut f = node(1, 3);
        let mut peer = node(2, 3);
        let old = peer.announcement();
        peer.set_member(5, None);
        let new = peer.announcement();
        f.receive(new, ms(10));
        f.receive(old, ms(20));
        assert_eq!(f.poll(ms(30)), Some(Action::Join(vec![addr(2)])));
    }

    /// Two nodes expecting two: `a` locks {1, 2}, then `b` dies before it hears that.
    fn locked_with_a_dead_peer() -> Formation {
        let mut a = node(1, 2);
        let mut b = node(2, 2);
        for t in [0, 100, 200, 300] {
            heard(&mut a, &mut b, ms(t));
            heard(&mut b, &mut a, ms(t));
            assert_eq!(a.poll(ms(t)), None);
            assert_eq!(b.poll(ms(t)), None);
        }
        // b proposes {1, 2} (settled at 250 ms); a hears it and locks; b never hears back.
        heard(&mut a, &mut b, ms(400));
        assert_eq!(a.poll(ms(400)), None);
        assert_eq!(a.locked(), Some(&BTreeSet::from([1, 2])));
        a
    }

    #[test]
    fn a_locked_set_with_a_dead_node_is_abandoned_after_the_timeout() {
        let mut a = locked_with_a_dead_peer();
        assert_eq!(a.poll(ms(400 + 9_900)), None);
        assert!(a.locked().is_some(), "still waiting before lock_timeout");
        assert_eq!(a.poll(ms(400 + 10_000)), None);
        assert_eq!(a.locked(), None, "unlocked after lock_timeout");
        assert_eq!(a.phase(), &Phase::Forming);
    }

    #[test]
    fn a_node_a_leader_has_contacted_never_unlocks() {
        let mut a = locked_with_a_dead_peer();
        a.contacted();
        a.poll(ms(60_000));
        assert!(a.locked().is_some());
    }

    #[test]
    fn initial_voters_are_odd_and_follow_hints() {
        let auto = |ids: &[NodeId]| ids.iter().map(|id| (*id, Hint::Auto)).collect::<Vec<_>>();
        assert_eq!(initial_voters(auto(&[4, 2]), 3), BTreeSet::from([2]));
        assert_eq!(
            initial_voters(auto(&[4, 2, 9, 7]), 5),
            BTreeSet::from([2, 4, 7])
        );
        assert_eq!(initial_voters(auto(&[1, 2, 3, 4, 5]), 5).len(), 5);
        assert_eq!(
            initial_voters([(1, Hint::Never), (2, Hint::Auto), (3, Hint::Prefer)], 1),
            BTreeSet::from([3])
        );
        assert_eq!(
            initial_voters([(8, Hint::Never), (6, Hint::Never)], 3),
            BTreeSet::from([6])
        );
    }

    #[test]
    fn the_cluster_id_depends_on_the_set_only() {
        let a = cluster_id(&BTreeSet::from([1, 2, 3]));
        assert_eq!(a, cluster_id(&BTreeSet::from([3, 2, 1])));
        assert_ne!(a, cluster_id(&BTreeSet::from([1, 2, 4])));
    }
}
