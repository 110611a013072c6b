//! A linearizability check of the key-value space under faults: clients write, compare-and-set
//! and read one key through all three nodes in turn while nodes are stopped (cut off),
//! resumed, killed and restarted from their data; the recorded history must have a
//! linearization.
//!
//! The key's revisions make the check exact and fast. Every write has a unique value, and the
//! revision a write got (or a read saw) fixes its place: the only possible order is the writes
//! by revision, each followed by the reads that saw it. The history is linearizable if and only
//! if that order fits the operations' real-time intervals, which a greedy pass decides (reads of
//! one revision taken earliest-deadline first). Operations whose answer never came may have
//! happened or not: one whose value a read saw takes that revision; the others may fill a
//! revision nobody else wrote, or be left out.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_cluster_api::client::{CasOutcome, ClientError};
use support::{Node, SECRET, free_port, runtime, signal, write_config};

/// What an operation did, as far as its client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    /// A read saw this (`None`: no key).
    Read(Option<(String, u64)>),
    /// A write of `value` got revision `revision`; `None`: no answer.
    Write {
        value: String,
        revision: Option<u64>,
    },
    /// A compare-and-set on `expected`: written at `Some(rev)`, failed seeing `current`, or
    /// no answer.
    Cas {
        expected: u64,
        value: String,
        outcome: CasResult,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CasResult {
    Written(u64),
    Failed(Option<(String, u64)>),
    Unknown,
}

/// One operation: when it was called and answered (`None`: never), and what it did.
#[derive(Debug, Clone)]
struct Op {
    call: u64,
    ret: Option<u64>,
    effect: Effect,
}

/// The revision and value an operation observed, for reads and failed compare-and-sets.
fn observed(effect: &Effect) -> Option<&Option<(String, u64)>> {
    match effect {
        Effect::Read(seen) => Some(seen),
        Effect::Cas {
            outcome: CasResult::Failed(current),
            ..
        } => Some(current),
        _ => None,
    }
}

/// The value and, when acknowledged, the revision of a write or a successful compare-and-set;
/// `(value, None)` for one whose outcome is unknown.
fn written(effect: &Effect) -> Option<(&str, Option<u64>)> {
    match effect {
        Effect::Write { value, revision } => Some((value, *revision)),
        Effect::Cas {
            value,
            outcome: CasResult::Written(r),
            ..
        } => Some((value, Some(*r))),
        Effect::Cas {
            value,
            outcome: CasResult::Unknown,
            ..
        } => Some((value, None)),
        _ => None,
    }
}

/// Whether `history` is linearizable from the empty register (see the module comment).
fn linearizable(history: &[Op]) -> Result<(), String> {
    use std::collections::BTreeMap;
    let show = |i: usize| format!("{:?}", history[i]);
    // The writer of each revision, from the acknowledgements.
    let mut by_revision: BTreeMap<u64, usize> = BTreeMap::new();
    let mut by_value: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, op) in history.iter().enumerate() {
        if let Some((value, revision)) = written(&op.effect) {
            by_value.insert(value, i);
            if let Some(r) = revision
                && let Some(other) = by_revision.insert(r, i)
            {
                return Err(format!(
                    "revision {r} acknowledged twice: {} and {}",
                    show(other),
                    show(i)
                ));
            }
        }
    }
    // What reads saw places the writes whose answer never came.
    let mut readers: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        let Some(seen) = observed(&op.effect) else {
            continue;
        };
        if op.ret.is_none() {
            continue;
        }
        let revision = match seen {
            None => 0,
            Some((value, r)) => {
                let Some(&writer) = by_value.get(value.as_str()) else {
                    return Err(format!("{} saw a value nobody wrote", show(i)));
                };
                match by_revision.get(r) {
                    Some(&w) if w != writer => {
                        return Err(format!(
                            "{} saw {value:?} at revision {r}, which {} wrote",
                            show(i),
                            show(w)
                        ));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(known) = written(&history[writer].effect).and_then(|w| w.1) {
                            return Err(format!(
                                "{} saw {value:?} at revision {r}, written at {known}",
                                show(i)
                            ));
                        }
                        if let Some((&other, _)) = by_revision.iter().find(|(_, w)| **w == writer) {
                            return Err(format!(
                                "{} saw {value:?} at revision {r} and at {other}",
                                show(writer)
                            ));
                        }
                        by_revision.insert(*r, writer);
                    }
                }
                *r
            }
        };
        if let Effect::Cas { expected, .. } = &op.effect
            && *expected == revision
        {
            return Err(format!(
                "{} failed although the revision was {revision}",
                show(i)
            ));
        }
        readers.entry(revision).or_default().push(i);
    }
    // Every revision up to the last needs a writer; unplaced unanswered writes may fill gaps.
    // An unanswered compare-and-set can only have taken the revision after the one it
    // expected; an unanswered write could have taken any, and the earliest called fits
    // wherever a later one does, so each gap (deadlines only loosen as revisions grow) takes
    // the compare-and-set made for it, else the earliest called write.
    let last = by_revision.keys().next_back().copied().unwrap_or(0);
    let placed: HashSet<usize> = by_revision.values().copied().collect();
    let unplaced = (0..history.len())
        .filter(|i| !placed.contains(i))
        .filter(|i| written(&history[*i].effect).is_some_and(|w| w.1.is_none()));
    let mut spare_writes: Vec<usize> = Vec::new();
    let mut spare_cas: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in unplaced {
        match &history[i].effect {
            Effect::Cas { expected, .. } => spare_cas.entry(expected + 1).or_default().push(i),
            _ => spare_writes.push(i),
        }
    }
    spare_writes.sort_by_key(|i| std::cmp::Reverse(history[*i].call));
    for r in 1..=last {
        if by_revision.contains_key(&r) {
            continue;
        }
        let cas = spare_cas
            .get(&r)
            .and_then(|c| c.iter().min_by_key(|i| history[**i].call));
        match cas.copied().or_else(|| spare_writes.pop()) {
            Some(i) => {
                by_revision.insert(r, i);
            }
            None => return Err(format!("revision {r} was written by no operation")),
        }
    }
    // A compare-and-set applies only on the revision it expected.
    for (&r, &i) in &by_revision {
        if let Effect::Cas { expected, .. } = &history[i].effect
            && *expected + 1 != r
        {
            return Err(format!(
                "{} took revision {r} but expected {expected}",
                show(i)
            ));
        }
    }
    // The only order left: writes by revision, each followed by its readers (earliest answer
    // first); it must fit every operation's interval.
    let mut point = 0u64;
    for r in 0..=last {
        let mut group: Vec<usize> = Vec::new();
        if r > 0 {
            group.push(by_revision[&r]);
        }
        let mut reads = readers.remove(&r).unwrap_or_default();
        reads.sort_by_key(|i| history[*i].ret.unwrap_or(u64::MAX));
        group.extend(reads);
        for i in group {
            point = point.max(history[i].call);
            if point > history[i].ret.unwrap_or(u64::MAX) {
                return Err(format!(
                    "{} ended before revision {r} could have happened (it must follow an operation called at {point})",
                    show(i)
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn the_checker_accepts_a_sequential_history_and_refuses_a_stale_read() {
    let w = |value: &str, r: u64, call, ret| Op {
        call,
        ret: Some(ret),
        effect: Effect::Write {
            value: value.into(),
            revision: Some(r),
        },
    };
    let read = |seen: Option<(&str, u64)>, call, ret| Op {
        call,
        ret: Some(ret),
        effect: Effect::Read(seen.map(|(v, r)| (v.to_string(), r))),
    };
    let good = [
        w("a", 1, 0, 10),
        read(Some(("a", 1)), 11, 12),
        w("b", 2, 13, 20),
    ];
    assert_eq!(linearizable(&good), Ok(()));
    // Concurrent: the read may see either.
    let concurrent = [
        w("a", 1, 0, 10),
        w("b", 2, 5, 30),
        read(Some(("a", 1)), 12, 14),
    ];
    assert_eq!(linearizable(&concurrent), Ok(()));
    // A read of the old value after the new one was acknowledged: stale.
    let stale = [
        w("a", 1, 0, 10),
        w("b", 2, 11, 20),
        read(Some(("a", 1)), 21, 22),
    ];
    assert!(linearizable(&stale).is_err());
    // An unanswered write may have happened...
    let unknown = [
        Op {
            call: 0,
            ret: None,
            effect: Effect::Write {
                value: "x".into(),
                revision: None,
            },
        },
        read(Some(("x", 1)), 50, 51),
    ];
    assert_eq!(linearizable(&unknown), Ok(()));
    // ...or not, but a compare-and-set that failed must have seen the real state.
    let cas_lie = [
        w("a", 1, 0, 10),
        Op {
            call: 11,
            ret: Some(12),
            effect: Effect::Cas {
                expected: 1,
                value: "b".into(),
                outcome: CasResult::Failed(Some(("a".into(), 1))),
            },
        },
    ];
    assert!(linearizable(&cas_lie).is_err());
    // A gap is filled by an unanswered write, not by an unanswered compare-and-set that
    // expected another revision (called earlier or not).
    let unanswered = |call, effect| Op {
        call,
        ret: None,
        effect,
    };
    let gap = [
        w("a", 1, 0, 10),
        unanswered(
            1,
            Effect::Cas {
                expected: 7,
                value: "c".into(),
                outcome: CasResult::Unknown,
            },
        ),
        unanswered(
            2,
            Effect::Write {
                value: "x".into(),
                revision: None,
            },
        ),
        w("b", 3, 20, 30),
    ];
    assert_eq!(linearizable(&gap), Ok(()));
    // ...and an unanswered compare-and-set fills the gap after the revision it expected.
    let cas_gap = [
        w("a", 1, 0, 10),
        unanswered(
            11,
            Effect::Cas {
                expected: 1,
                value: "c".into(),
                outcome: CasResult::Unknown,
            },
        ),
        unanswered(
            1,
            Effect::Write {
                value: "x".into(),
                revision: None,
            },
        ),
        w("b", 3, 20, 30),
        w("d", 4, 31, 40),
    ];
    assert_eq!(linearizable(&cas_gap), Ok(()));
    // Two acknowledgements of one revision; a revision nobody wrote; a value nobody wrote.
    assert!(linearizable(&[w("a", 1, 0, 10), w("b", 1, 11, 20)]).is_err());
    assert!(linearizable(&[w("a", 2, 0, 10)]).is_err());
    assert!(linearizable(&[read(Some(("ghost", 1)), 0, 1)]).is_err());
    // Reads of one revision in any order, as long as each fits its interval.
    let reads = [
        w("a", 1, 0, 10),
        read(Some(("a", 1)), 5, 100),
        read(Some(("a", 1)), 11, 12),
        w("b", 2, 50, 60),
    ];
    assert_eq!(linearizable(&reads), Ok(()));
}

#[test]
fn the_key_value_space_is_linearizable_under_kills_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "lin", SECRET, 3, 3, &ports);
    let data: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("data{i}")))
        .collect();
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::start_with(&config, ports[i], Some(&data[i])))
        .collect();
    for n in &nodes {
        n.membership(Duration::from_secs(20));
    }
    let apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    let nodes = Arc::new(Mutex::new(nodes.into_iter().map(Some).collect::<Vec<_>>()));
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_micros() as u64;
    let history = Arc::new(Mutex::new(Vec::new()));
    let run_for = Duration::from_secs(12);

    // Faults: stop a node for a while, then kill another and restart it from its data.
    let faults = {
        let nodes = nodes.clone();
        let config = config.clone();
        let data = data.clone();
        let ports = ports.clone();
        let apis = apis.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while epoch.elapsed() < run_for - Duration::from_secs(3) {
                let victim = rounds % 3;
                std::thread::sleep(Duration::from_millis(700));
                {
                    let all = nodes.lock().unwrap();
                    if let Some(n) = &all[victim] {
                        signal(n, libc::SIGSTOP);
                    }
                }
                std::thread::sleep(Duration::from_millis(900));
                {
                    let all = nodes.lock().unwrap();
                    if let Some(n) = &all[victim] {
                        signal(n, libc::SIGCONT);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
                let killed = (victim + 1) % 3;
                let taken = nodes.lock().unwrap()[killed].take();
                drop(taken);
                std::thread::sleep(Duration::from_millis(400));
                let restarted = Node::start_full(
                    &config,
                    ports[killed],
                    apis[killed],
                    Some(&data[killed]),
                    &[],
                );
                nodes.lock().unwrap()[killed] = Some(restarted);
                rounds += 1;
            }
        })
    };

    let clients: Vec<_> = (0..3)
        .map(|c| {
            let history = history.clone();
            let apis = apis.clone();
            std::thread::spawn(move || {
                let rt = runtime();
                let mut last_seen = 0u64;
                let mut i = 0u64;
                while epoch.elapsed() < run_for {
                    let api = apis[((c as u64 + i) % 3) as usize];
                    let one = support::client_at(SECRET, api).with_timeout(Duration::from_secs(2));
                    let call = now();
                    let kind = (i * 7 + c as u64) % 3;
                    let value = format!("c{c}-{i}");
                    let effect = match kind {
                        0 => match rt.block_on(one.get("reg")) {
                            Ok(r) => Some(Effect::Read(r.map(|kv| {
                                last_seen = kv.revision;
                                (kv.value, kv.revision)
                            }))),
                            Err(_) => None,
                        },
                        1 => match rt.block_on(one.put("reg", &value)) {
                            Ok(w) => Some(Effect::Write {
                                value,
                                revision: Some(w.revision),
                            }),
                            Err(ClientError::Unreachable(_)) => None,
                            Err(_) => Some(Effect::Write {
                                value,
                                revision: None,
                            }),
                        },
                        _ => {
                            let expected = last_seen;
                            let outcome = match rt.block_on(one.cas("reg", expected, Some(&value)))
                            {
                                Ok(CasOutcome::Written(w)) => Some(CasResult::Written(w.revision)),
                                Ok(CasOutcome::Failed(f)) => {
                                    if let Some(c) = &f.current {
                                        last_seen = c.revision;
                                    }
                                    Some(CasResult::Failed(
                                        f.current.map(|c| (c.value, c.revision)),
                                    ))
                                }
                                Err(ClientError::Unreachable(_)) => None,
                                Err(_) => Some(CasResult::Unknown),
                            };
                            outcome.map(|outcome| Effect::Cas {
                                expected,
                                value,
                                outcome,
                            })
                        }
                    };
                    let answered = match &effect {
                        Some(Effect::Write { revision: None, .. })
                        | Some(Effect::Cas {
                            outcome: CasResult::Unknown,
                            ..
                        }) => None,
                        _ => Some(now()),
                    };
                    if let Some(effect) = effect {
                        history.lock().unwrap().push(Op {
                            call,
                            ret: answered,
                            effect,
                        });
                    }
                    i += 1;
                    // Keeps the history small enough to check quickly.
                    std::thread::sleep(Duration::from_millis(15));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    faults.join().unwrap();
    let history = history.lock().unwrap().clone();
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    let writes = history
        .iter()
        .filter(|o| {
            matches!(
                o.effect,
                Effect::Write {
                    revision: Some(_),
                    ..
                } | Effect::Cas {
                    outcome: CasResult::Written(_),
                    ..
                }
            )
        })
        .count();
    eprintln!(
        "history: {} operations ({answered} answered, {writes} acknowledged writes)",
        history.len()
    );
    assert!(
        writes >= 10,
        "too few writes went through to test anything: {history:?}"
    );
    let started = Instant::now();
    let verdict = linearizable(&history);
    eprintln!("checked in {:.2} s", started.elapsed().as_secs_f64());
    if let Err(e) = verdict {
        panic!("{e}\nhistory: {history:#?}");
    }
}
