//! The leader-lease model: a leader that serves reads on its lease, and
//! followers whose clocks run at other rates trying to elect a new leader
//! while it does. It checks the bound `raftstore::lease` states: no replica
//! becomes leader of a later term while the old leader's lease holds.
//!
//! Time is real and discrete (one unit a millisecond) and moves from one
//! instant something falls due to the next. Each replica reads it through
//! its own clock: the leader's runs at 0.9 times real time and the
//! followers' at 1.1 times, the worst case for clocks 10 % apart (the
//! simulator's bound; real clocks differ by parts per million). The lease
//! itself is the real code: `raftstore::lease::lease_duration` and
//! `LeaderLease`, on `Instant`s of the leader's clock.
//!
//! Mirrors the code:
//! - ticks (`ShardCore::on_clock`): a replica ticks once its clock reaches
//!   its next tick, or later (a long turn); the next one is due a tick
//!   after this one was, or at once if that has passed too. So a late tick
//!   may come right after a heartbeat restarted the timer and be followed
//!   at once by a second: that is why the lease counts two ticks short;
//! - raft-rs with check-quorum: a follower that heard from a leader fewer
//!   than `election_ticks` ticks ago ignores vote and pre-vote requests
//!   (`in_lease`), and so does a leader; a follower's timer restarts on
//!   every heartbeat of its leader; a replica may campaign once its timer
//!   reached `election_ticks` (the least randomized timeout), with
//!   pre-vote first;
//! - a restarted replica knows no leader and refuses votes for an election
//!   timeout after it starts (`ShardCore::refuses_vote`);
//! - a ReadIndex round (`Peer::flush_reads`): the leader notes its clock,
//!   sends heartbeats, and once a quorum (itself and one follower) answered,
//!   confirms the lease from the time it noted (`Peer::collect_ready`);
//! - a leadership transfer (`Peer::transfer_leader`): the leader forbids
//!   itself a lease for the rest of its term and tells the target to
//!   campaign at once; the target's vote requests skip pre-vote and are
//!   answered whatever the voters' timers (raft-rs `CAMPAIGN_TRANSFER`,
//!   which `ShardCore::refuses_vote` lets through too).
//!
//! The network delays messages arbitrarily and may lose them. Left out,
//! because they only delay elections: the leader's periodic heartbeats
//! and appends (they restart followers' timers as rounds do, but extend no
//! lease), randomized timeouts above the least one, and logs (every
//! replica's is as up to date as the others'). Membership changes revoke
//! the lease in the code and are not modelled.
//!
//! Property: while the first leader believes it leads and its lease holds
//! on its clock, no replica leads a later term. Four broken variants must
//! fail it: a lease of a whole election timeout, one that counts only one
//! tick short (late ticks forgotten), replicas that vote right after a
//! restart, and a leader that keeps its lease through a transfer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftstore::lease::{lease_duration, LeaderLease};
use stateright::{Model, Property};

use crate::depth::Depth;

/// Replica ids; replica 1 leads term 1 at the start.
pub type ReplicaId = u8;
const REPLICAS: [ReplicaId; 3] = [1, 2, 3];
const FIRST_LEADER: ReplicaId = 1;
/// Milliseconds of real time per tick of a clock that runs true.
const TICK_MS: u64 = 10;
/// Election timeout, in ticks (the least randomized one).
const ELECTION_TICKS: u64 = 5;

/// How fast a replica's clock runs, in tenths of real time.
pub type ClockRate = u64;
/// The leader's clock runs 10 % slow, so its lease lasts longest in real
/// time; the followers' run 10 % fast, so their timers expire soonest.
/// Any other rates within 10 % give the adversary less.
const LEADER_CLOCK_RATE: ClockRate = 9;
const FOLLOWER_CLOCK_RATE: ClockRate = 11;

/// How long the leader's lease lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseBound {
    /// Flotilla's: `raftstore::lease::lease_duration`.
    Flotilla,
    /// Deliberately broken: the same margin for clocks, but counting only
    /// one tick short of the election timeout, as if no tick were ever
    /// late (`0.8 × (election_ticks − 1) × tick`).
    NoLateTicks,
    /// Deliberately broken: a whole election timeout.
    WholeElectionTimeout,
}

/// What the leader does to its lease when it starts a leadership transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferRule {
    /// Flotilla's (`Peer::transfer_leader`): `LeaderLease::forbid` for the
    /// rest of the term, since the transfer's votes ignore timers.
    ForbidLease,
    /// Deliberately broken: the lease is kept.
    KeepLease,
}

/// Whether a restarted replica refuses votes for an election timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartRule {
    /// Flotilla's (`ShardCore::refuses_vote`).
    RefuseVotes,
    /// Deliberately broken: it votes at once, its timer forgotten.
    VoteAtOnce,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Replica {
    pub role: Role,
    pub term: u64,
    /// Whom it voted for in `term` (0: nobody).
    pub vote: ReplicaId,
    /// The leader it follows (0: none known).
    pub leader: ReplicaId,
    /// raft-rs `election_elapsed`: ticks since the timer last restarted.
    pub elapsed: u64,
    /// When its next tick is due, on its own clock (ms).
    pub next_tick: u64,
    /// Votes granted to it in its current campaign.
    pub granted: BTreeSet<ReplicaId>,
    /// Until when (its clock, ms) it refuses votes after a restart.
    pub votes_refused_until: Option<u64>,
    pub rate: ClockRate,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum MsgKind {
    /// A ReadIndex round's heartbeat; `round` names it.
    Heartbeat {
        round: u8,
    },
    HeartbeatResponse {
        round: u8,
    },
    PreVote,
    PreVoteResponse {
        granted: bool,
    },
    /// A vote request; `transfer` marks a leadership transfer's
    /// (raft-rs `CAMPAIGN_TRANSFER`), which timers do not hold up.
    Vote {
        transfer: bool,
    },
    /// The leader tells the transfer's target to campaign at once.
    TimeoutNow,
    VoteResponse {
        granted: bool,
    },
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Msg {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub term: u64,
    pub kind: MsgKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LeaseState {
    /// Real time, ms.
    pub now: u64,
    pub replicas: Vec<Replica>,
    pub network: BTreeSet<Msg>,
    /// The first leader's rounds: when each started, on its clock (ms).
    pub rounds: Vec<u64>,
    /// The first leader's lease, on its clock.
    pub lease: LeaderLease,
    pub restarts: u8,
    pub campaigns: u8,
    pub transfers: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Real time moves on to the next instant something falls due: a
    /// tick, a second overdue tick, or the end of a vote refusal.
    Advance,
    /// A replica whose tick is due ticks (`ShardCore::on_clock`): at that
    /// instant or later, as a busy shard would, but before the next one
    /// is due too.
    Tick(ReplicaId),
    /// The first leader starts a ReadIndex round.
    StartRound,
    /// The first leader starts a leadership transfer to a follower.
    Transfer(ReplicaId),
    /// A replica that does not lead and whose timer expired campaigns
    /// (pre-vote first).
    Campaign(ReplicaId),
    Deliver(Msg),
    Restart(ReplicaId),
}

/// The model and its bounds.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    pub bound: LeaseBound,
    pub restart_rule: RestartRule,
    pub transfer_rule: TransferRule,
    /// Real time explored, ms.
    pub horizon_ms: u64,
    pub rounds_max: usize,
    pub restarts_max: u8,
    pub campaigns_max: u8,
    pub transfers_max: u8,
    /// At most this many messages in flight (states with more are not
    /// explored).
    pub network_max: usize,
    /// A fixed origin for the leader's `Instant`s.
    pub origin: Instant,
}

impl LeaseModel {
    /// Flotilla's rules at the bounds `depth` asks for, both with the
    /// leader's clock slow and the followers' fast (the worst case):
    /// quick, one ReadIndex round, one campaign and one restart; deep, two
    /// rounds (a lease extended). No transfer: [`LeaseModel::with_transfer`].
    pub fn new(depth: Depth) -> LeaseModel {
        let flotilla = LeaseModel {
            bound: LeaseBound::Flotilla,
            restart_rule: RestartRule::RefuseVotes,
            transfer_rule: TransferRule::ForbidLease,
            horizon_ms: ELECTION_TICKS * TICK_MS + 30,
            rounds_max: 1,
            restarts_max: 1,
            campaigns_max: 1,
            transfers_max: 0,
            network_max: 3,
            origin: Instant::now(),
        };
        match depth {
            Depth::Quick => flotilla,
            Depth::Deep => LeaseModel {
                rounds_max: 2,
                ..flotilla
            },
        }
    }

    /// The same bounds with one leadership transfer instead of a restart
    /// and a campaign of a replica's own (the transfer's target campaigns;
    /// all three at once are beyond what the quick bounds can afford).
    pub fn with_transfer(self) -> LeaseModel {
        LeaseModel {
            restarts_max: 0,
            campaigns_max: 0,
            transfers_max: 1,
            ..self
        }
    }

    fn lease_duration(&self) -> Duration {
        let tick = Duration::from_millis(TICK_MS);
        match self.bound {
            LeaseBound::Flotilla => {
                lease_duration(tick, ELECTION_TICKS as usize).unwrap_or(Duration::ZERO)
            }
            LeaseBound::NoLateTicks => {
                let bound = tick * (ELECTION_TICKS - 1) as u32;
                bound - bound / 5
            }
            LeaseBound::WholeElectionTimeout => tick * ELECTION_TICKS as u32,
        }
    }

    /// `replica`'s clock reading at real time `now` (ms).
    fn clock(replica: &Replica, now: u64) -> u64 {
        now * replica.rate / 10
    }

    fn instant(&self, clock_ms: u64) -> Instant {
        self.origin + Duration::from_millis(clock_ms)
    }

    /// Whether the first leader still leads term 1 and its lease holds now.
    pub fn lease_holds(&self, state: &LeaseState) -> bool {
        let leader = &state.replicas[usize::from(FIRST_LEADER - 1)];
        leader.role == Role::Leader
            && leader.term == 1
            && state
                .lease
                .holds(1, self.instant(Self::clock(leader, state.now)))
    }
}

fn replica(state: &mut LeaseState, id: ReplicaId) -> &mut Replica {
    &mut state.replicas[usize::from(id - 1)]
}

/// raft-rs `in_lease`: with check-quorum, a replica that knows a leader and
/// heard from it within an election timeout ignores (pre-)vote requests.
fn in_lease(r: &Replica) -> bool {
    r.role == Role::Leader || (r.leader != 0 && r.elapsed < ELECTION_TICKS)
}

/// `ShardCore::on_clock` at `now` (real ms), its tick due: the next one is
/// due a tick after this one was, or at once if that has passed too (so
/// an overdue tick is followed by at most one more at once). A leader's
/// own timer is not modelled: it refuses votes all the same (raft-rs
/// restarts it every election timeout under check-quorum).
fn tick(r: &mut Replica, now: u64) {
    let clock = LeaseModel::clock(r, now);
    debug_assert!(r.role != Role::Leader && clock >= r.next_tick);
    // At the election timeout a replica acts as it would later on.
    r.elapsed = (r.elapsed + 1).min(ELECTION_TICKS);
    r.next_tick = (r.next_tick + TICK_MS).max(clock);
    if r.votes_refused_until.is_some_and(|until| until <= clock) {
        r.votes_refused_until = None;
    }
}

/// The first real time after `state.now` at which a replica's tick falls
/// due, an overdue tick becomes two, or a vote refusal ends: nothing the
/// model decides changes in between (the lease's end is only compared
/// with the times of events).
fn next_instant(state: &LeaseState) -> u64 {
    let reached = |r: &Replica, clock_ms: u64| {
        // The first real ms at which `r`'s clock reads `clock_ms`.
        (clock_ms * 10).div_ceil(r.rate)
    };
    state
        .replicas
        .iter()
        .filter(|r| r.role != Role::Leader)
        .flat_map(|r| {
            [
                Some(r.next_tick),
                Some(r.next_tick + TICK_MS),
                r.votes_refused_until,
            ]
            .map(|due| due.map(|d| reached(r, d)))
        })
        .flatten()
        .filter(|&t| t > state.now)
        .min()
        .unwrap_or(state.now + 1)
}

/// raft-rs `become_candidate`: the next term, a vote for itself, the
/// timer restarted. Returns the new term.
fn become_candidate(r: &mut Replica, id: ReplicaId) -> u64 {
    r.role = Role::Candidate;
    r.term += 1;
    r.vote = id;
    r.leader = 0;
    r.elapsed = 0;
    r.granted.clear();
    r.term
}

fn become_follower(r: &mut Replica, term: u64, leader: ReplicaId) {
    r.role = Role::Follower;
    if term > r.term {
        r.term = term;
        r.vote = 0;
    }
    r.leader = leader;
    r.elapsed = 0;
    r.granted.clear();
}

impl LeaseModel {
    fn send_to_others(&self, state: &mut LeaseState, from: ReplicaId, term: u64, kind: MsgKind) {
        for to in REPLICAS.into_iter().filter(|&to| to != from) {
            state.network.insert(Msg {
                from,
                to,
                term,
                kind,
            });
        }
    }

    fn deliver(&self, state: &mut LeaseState, m: Msg) {
        let now = state.now;
        let r = replica(state, m.to);
        let clock = Self::clock(r, now);
        let timers_hold_up = matches!(m.kind, MsgKind::PreVote | MsgKind::Vote { transfer: false });
        if timers_hold_up {
            // `ShardCore::refuses_vote`, before raft-rs sees it.
            if self.restart_rule == RestartRule::RefuseVotes
                && r.votes_refused_until.is_some_and(|until| clock < until)
            {
                return;
            }
            // raft-rs `step`: a request of a later term from a replica
            // this one need not hear is ignored.
            if m.term > r.term && in_lease(r) {
                return;
            }
        }
        if m.term > r.term && !matches!(m.kind, MsgKind::PreVote | MsgKind::PreVoteResponse { .. })
        {
            let leader = if matches!(m.kind, MsgKind::Heartbeat { .. }) {
                m.from
            } else {
                0
            };
            become_follower(r, m.term, leader);
        }
        let term = r.term;
        match m.kind {
            MsgKind::Heartbeat { round } => {
                if m.term < term {
                    return;
                }
                become_follower(r, m.term, m.from);
                state.network.insert(Msg {
                    from: m.to,
                    to: m.from,
                    term,
                    kind: MsgKind::HeartbeatResponse { round },
                });
            }
            MsgKind::HeartbeatResponse { round } => {
                if m.term != term || r.role != Role::Leader || m.to != FIRST_LEADER {
                    return;
                }
                // Quorum: the leader and this follower.
                let started = state.rounds[usize::from(round)];
                let duration = self.lease_duration();
                state.lease.confirm(term, self.instant(started), duration);
            }
            MsgKind::TimeoutNow => {
                // raft-rs `hup(true)`: a candidate at once, no pre-vote.
                if m.term != term || r.role != Role::Follower {
                    return;
                }
                let term = become_candidate(r, m.to);
                self.send_to_others(state, m.to, term, MsgKind::Vote { transfer: true });
            }
            MsgKind::PreVote | MsgKind::Vote { .. } => {
                // raft-rs `handle_vote_request` (logs are equal here).
                let pre = m.kind == MsgKind::PreVote;
                let can_vote = m.term >= term
                    && (r.vote == m.from
                        || (r.vote == 0 && r.leader == 0)
                        || (pre && m.term > term));
                if !pre && can_vote {
                    r.vote = m.from;
                    r.elapsed = 0;
                }
                let reply_term = if can_vote { m.term } else { term };
                let kind = if pre {
                    MsgKind::PreVoteResponse { granted: can_vote }
                } else {
                    MsgKind::VoteResponse { granted: can_vote }
                };
                state.network.insert(Msg {
                    from: m.to,
                    to: m.from,
                    term: reply_term,
                    kind,
                });
            }
            MsgKind::PreVoteResponse { granted } | MsgKind::VoteResponse { granted } => {
                let expected = if matches!(m.kind, MsgKind::PreVoteResponse { .. }) {
                    (Role::PreCandidate, term + 1)
                } else {
                    (Role::Candidate, term)
                };
                if (r.role, m.term) != expected || !granted {
                    return;
                }
                r.granted.insert(m.from);
                if r.granted.len() + 1 < 2 {
                    return;
                }
                if r.role == Role::PreCandidate {
                    let term = become_candidate(r, m.to);
                    self.send_to_others(state, m.to, term, MsgKind::Vote { transfer: false });
                } else {
                    r.role = Role::Leader;
                    r.leader = m.to;
                }
            }
        }
    }
}

impl Model for LeaseModel {
    type State = LeaseState;
    type Action = Action;

    fn init_states(&self) -> Vec<LeaseState> {
        let replicas = REPLICAS
            .into_iter()
            .map(|id| Replica {
                role: if id == FIRST_LEADER {
                    Role::Leader
                } else {
                    Role::Follower
                },
                term: 1,
                vote: FIRST_LEADER,
                leader: FIRST_LEADER,
                elapsed: 0,
                next_tick: TICK_MS,
                granted: BTreeSet::new(),
                votes_refused_until: None,
                rate: if id == FIRST_LEADER {
                    LEADER_CLOCK_RATE
                } else {
                    FOLLOWER_CLOCK_RATE
                },
            })
            .collect();
        vec![LeaseState {
            now: 0,
            replicas,
            network: BTreeSet::new(),
            rounds: Vec::new(),
            lease: LeaderLease::default(),
            restarts: 0,
            campaigns: 0,
            transfers: 0,
        }]
    }

    fn actions(&self, state: &LeaseState, actions: &mut Vec<Action>) {
        if state
            .replicas
            .iter()
            .any(|r| r.role == Role::Leader && r.term > 1)
        {
            return; // the first leader's lease, if any, had to end before
        }
        // A tick may wait (a busy shard), but not past the next one: the
        // two then come at once, which is all a longer wait could do.
        let two_due = state
            .replicas
            .iter()
            .any(|r| r.role != Role::Leader && Self::clock(r, state.now) >= r.next_tick + TICK_MS);
        if state.now < self.horizon_ms && !two_due {
            actions.push(Action::Advance);
        }
        for (r, id) in state.replicas.iter().zip(REPLICAS) {
            if r.role != Role::Leader && Self::clock(r, state.now) >= r.next_tick {
                actions.push(Action::Tick(id));
            }
            if r.role != Role::Leader
                && r.elapsed >= ELECTION_TICKS
                && state.campaigns < self.campaigns_max
            {
                actions.push(Action::Campaign(id));
            }
            if id != FIRST_LEADER && state.restarts < self.restarts_max {
                actions.push(Action::Restart(id));
            }
        }
        let first = &state.replicas[usize::from(FIRST_LEADER - 1)];
        if first.role == Role::Leader && first.term == 1 {
            if state.rounds.len() < self.rounds_max {
                actions.push(Action::StartRound);
            }
            if state.transfers < self.transfers_max {
                actions.extend(
                    REPLICAS
                        .into_iter()
                        .filter(|&to| to != FIRST_LEADER)
                        .map(Action::Transfer),
                );
            }
        }
        actions.extend(state.network.iter().copied().map(Action::Deliver));
    }

    fn next_state(&self, last: &LeaseState, action: Action) -> Option<LeaseState> {
        let mut state = last.clone();
        match action {
            Action::Advance => state.now = next_instant(&state),
            Action::Tick(id) => {
                let now = state.now;
                tick(replica(&mut state, id), now);
            }
            Action::Transfer(to) => {
                state.transfers += 1;
                if self.transfer_rule == TransferRule::ForbidLease {
                    state.lease.forbid(1);
                }
                state.network.insert(Msg {
                    from: FIRST_LEADER,
                    to,
                    term: 1,
                    kind: MsgKind::TimeoutNow,
                });
            }
            Action::StartRound => {
                let clock = Self::clock(&state.replicas[usize::from(FIRST_LEADER - 1)], state.now);
                let round = state.rounds.len() as u8;
                state.rounds.push(clock);
                self.send_to_others(&mut state, FIRST_LEADER, 1, MsgKind::Heartbeat { round });
            }
            Action::Campaign(id) => {
                // raft-rs `tick_election`: the timer restarts as it fires.
                state.campaigns += 1;
                let r = replica(&mut state, id);
                r.role = Role::PreCandidate;
                r.leader = 0;
                r.elapsed = 0;
                r.granted.clear();
                let term = r.term + 1;
                self.send_to_others(&mut state, id, term, MsgKind::PreVote);
            }
            Action::Deliver(m) => {
                state.network.remove(&m);
                self.deliver(&mut state, m);
            }
            Action::Restart(id) => {
                state.restarts += 1;
                let now = state.now;
                let r = replica(&mut state, id);
                let clock = Self::clock(r, now);
                // Term and vote are durable; the rest starts afresh.
                r.role = Role::Follower;
                r.leader = 0;
                r.elapsed = 0;
                r.granted.clear();
                r.next_tick = clock + TICK_MS;
                r.votes_refused_until = Some(clock + ELECTION_TICKS * TICK_MS);
            }
        }
        Some(state)
    }

    fn within_boundary(&self, state: &LeaseState) -> bool {
        state.network.len() <= self.network_max
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_LEADER_DURING_LEASE, |model: &LeaseModel, state| {
                !model.lease_holds(state)
                    || state
                        .replicas
                        .iter()
                        .all(|r| r.role != Role::Leader || r.term <= 1)
            }),
            Property::sometimes(LEASE_CONFIRMED, |model: &LeaseModel, state| {
                model.lease_holds(state)
            }),
            Property::sometimes(NEW_LEADER_AFTER_LEASE, |_, state: &LeaseState| {
                state.lease != LeaderLease::default()
                    && state
                        .replicas
                        .iter()
                        .any(|r| r.term > 1 && r.role == Role::Leader)
            }),
        ]
    }
}

/// No replica leads a later term while the first leader's lease holds.
pub const NO_LEADER_DURING_LEASE: &str = "no new leader while the lease holds";
/// Reachability: a lease is confirmed (so reads could be served on it).
pub const LEASE_CONFIRMED: &str = "a lease is confirmed";
/// Reachability: after a lease was confirmed, another replica is elected.
pub const NEW_LEADER_AFTER_LEASE: &str = "a new leader after a lease";
