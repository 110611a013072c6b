//! Consensus with openraft: the type configuration, and the log and state machine a diskless
//! node keeps in memory (a node with persistent storage will keep them on disk; a diskless
//! node rejoins as a new member after a reboot).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use tokio::sync::Mutex;

use crate::formation::NodeId;
use crate::state::{Command, Outcome, State};

openraft::declare_raft_types!(
    /// Shoal's consensus types: commands and outcomes of [`State`], `u64` node ids, nodes
    /// named by their peer address.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
type StoreResult<T> = Result<T, StorageError<NodeId>>;

#[derive(Debug, Default)]
struct Log {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

/// The log and vote, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Log>>,
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let log = self.inner.lock().await;
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let log = self.inner.lock().await;
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.inner.lock().await.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.inner.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut log = self.inner.lock().await;
        for entry in entries {
            log.entries.insert(entry.log_id.index, entry);
        }
        // In memory, an entry is as durable as it will ever be once it is in the map.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut log = self.inner.lock().await;
        log.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut log = self.inner.lock().await;
        let keep = log.entries.split_off(&(log_id.index + 1));
        log.entries = keep;
        log.purged = Some(log_id);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Machine {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: State,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// The state machine: [`State`] plus what consensus needs to know about it.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Machine>>,
    /// The key-value revision after each apply, for watchers.
    revision: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine {
            inner: Arc::default(),
            revision: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl StateMachine {
    /// Changes whenever a write to the key-value space is applied.
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The last applied log index.
    pub async fn applied_index(&self) -> u64 {
        self.inner.lock().await.applied.map_or(0, |l| l.index)
    }

    /// A copy of the state as applied so far (a read after `ensure_linearizable` is current).
    pub async fn state(&self) -> State {
        self.inner.lock().await.state.clone()
    }

    /// Reads the state as applied so far without copying it.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.lock().await.state)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let mut m = self.inner.lock().await;
        let data =
            serde_json::to_vec(&m.state).map_err(|e| StorageIOError::read_state_machine(&e))?;
        m.snapshots_built += 1;
        let snapshot_id = match m.applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, m.snapshots_built),
            None => format!("empty-{}", m.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: m.applied,
            last_membership: m.membership.clone(),
            snapshot_id,
        };
        m.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let m = self.inner.lock().await;
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut m = self.inner.lock().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            m.applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(command) => m.state.apply(&command),
                EntryPayload::Membership(membership) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Done
                }
            };
            outcomes.push(outcome);
        }
        self.revision.send_replace(m.state.revision);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let state: State = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut m = self.inner.lock().await;
        self.revision.send_replace(state.revision);
        m.state = state;
        m.applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let m = self.inner.lock().await;
        Ok(m.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
