//! Consensus with openraft: the type configuration, the log and the state machine.
//!
//! With a data directory the log is a [`Journal`] (every vote and entry on disk before it is
//! acknowledged) and snapshots are files, so a restarted node comes back with its state. A
//! diskless node keeps both in memory and rejoins as a new member after a reboot.

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
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::journal::{Journal, write_atomic};

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

/// One change of the log, as the journal records it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogRecord {
    Vote(Vote<NodeId>),
    Entry(Entry<TypeConfig>),
    /// Entries from this index on were removed.
    Truncate(u64),
    /// Entries up to this id were removed.
    Purge(LogId<NodeId>),
}

/// A journal this large after a purge is rewritten from the live log.
const REWRITE_AFTER: u64 = 4 << 20;

#[derive(Debug, Default)]
struct Log {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    journal: Option<Journal>,
}

impl Log {
    fn replay(&mut self, record: LogRecord) {
        match record {
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            LogRecord::Truncate(index) => {
                self.entries.split_off(&index);
            }
            LogRecord::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.purged = Some(id);
            }
        }
    }

    /// Records changes durably (a no-op in memory).
    fn record(&mut self, records: &[LogRecord]) -> std::io::Result<()> {
        match &mut self.journal {
            Some(j) => j.append(records),
            None => Ok(()),
        }
    }
}

/// The log and vote: in memory, or journaled in a file.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Log>>,
}

impl MemLog {
    /// The log journaled at `path`, with what an earlier run left there. Returns it and the
    /// bytes of a torn tail that were cut off.
    pub fn open(path: &std::path::Path) -> std::io::Result<(MemLog, u64)> {
        let opened = Journal::open::<LogRecord>(path)?;
        let mut log = Log::default();
        for record in opened.records {
            log.replay(record);
        }
        log.journal = Some(opened.journal);
        Ok((
            MemLog {
                inner: Arc::new(Mutex::new(log)),
            },
            opened.discarded,
        ))
    }

    /// Whether the log holds anything (a vote or an entry): the node was a member before.
    pub async fn is_used(&self) -> bool {
        let log = self.inner.lock().await;
        log.vote.is_some() || !log.entries.is_empty() || log.purged.is_some()
    }
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
        let mut log = self.inner.lock().await;
        log.record(&[LogRecord::Vote(*vote)])
            .map_err(|e| StorageIOError::write_vote(&e))?;
        log.vote = Some(*vote);
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
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if log.journal.is_some() {
            let records: Vec<LogRecord> = entries.iter().cloned().map(LogRecord::Entry).collect();
            // On disk (fdatasync) before openraft hears the entries are flushed.
            if let Err(e) = log.record(&records) {
                callback.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
                return Err(StorageIOError::write_logs(&e).into());
            }
        }
        for entry in entries {
            log.entries.insert(entry.log_id.index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut log = self.inner.lock().await;
        log.record(&[LogRecord::Truncate(log_id.index)])
            .map_err(|e| StorageIOError::write_logs(&e))?;
        log.replay(LogRecord::Truncate(log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut log = self.inner.lock().await;
        log.record(&[LogRecord::Purge(log_id)])
            .map_err(|e| StorageIOError::write_logs(&e))?;
        log.replay(LogRecord::Purge(log_id));
        let rewrite = log
            .journal
            .as_ref()
            .is_some_and(|j| j.len() > REWRITE_AFTER);
        if rewrite {
            let mut live: Vec<LogRecord> = Vec::new();
            live.extend(log.vote.map(LogRecord::Vote));
            live.extend(log.purged.map(LogRecord::Purge));
            live.extend(log.entries.values().cloned().map(LogRecord::Entry));
            if let Some(j) = &mut log.journal {
                j.rewrite(&live)
                    .map_err(|e| StorageIOError::write_logs(&e))?;
            }
        }
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
    /// Where snapshots are kept (`None`: in memory only).
    snapshot_file: Option<std::path::PathBuf>,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine {
            inner: Arc::default(),
            revision: Arc::new(tokio::sync::watch::channel(0).0),
            snapshot_file: None,
        }
    }
}

/// A snapshot as its file holds it.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: State,
}

impl StateMachine {
    /// A state machine that keeps its snapshots in `path`, starting from the one there.
    /// Consensus re-applies the log entries after it.
    pub fn open(path: &std::path::Path) -> std::io::Result<StateMachine> {
        let mut machine = Machine::default();
        match std::fs::read(path) {
            Ok(bytes) => {
                let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                machine.applied = file.meta.last_log_id;
                machine.membership = file.meta.last_membership.clone();
                let data = serde_json::to_vec(&file.state).map_err(std::io::Error::other)?;
                machine.state = file.state;
                machine.snapshot = Some((file.meta, data));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let revision = machine.state.revision;
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(machine)),
            revision: Arc::new(tokio::sync::watch::channel(revision).0),
            snapshot_file: Some(path.to_path_buf()),
        })
    }

    /// Writes the snapshot to its file (nothing in memory-only mode).
    fn persist(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        state: &State,
    ) -> std::io::Result<()> {
        let Some(path) = &self.snapshot_file else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(&SnapshotFile {
            meta: meta.clone(),
            state: state.clone(),
        })
        .map_err(std::io::Error::other)?;
        write_atomic(path, &bytes)
    }

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
        self.persist(&meta, &m.state)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
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
        self.persist(meta, &state)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
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
