//! Group commit: every write to the database goes through one writer thread, which takes
//! all the writes queued while it was busy and commits them in one transaction — each in its
//! own savepoint, so one write's error rolls back only that write. A caller hears its result
//! only after the transaction that holds it is durably committed, so nothing is acknowledged
//! that a crash could undo; but a burst of concurrent writes (an alarm storm, a flood of
//! clicks) costs one fsync per batch instead of one per write.
//!
//! With nothing queued the writer commits at once: a lone write waits for no one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::workflow::ports::{BoxFuture, StoreError};

/// The most writes one transaction carries (a bound on how long one commit can take).
const MAX_BATCH: usize = 256;

/// Writes queued for the writer beyond this make their callers wait (back-pressure).
const QUEUE: usize = 4096;

/// A handle on the writer thread. Cloning shares it; the thread ends when the last handle is
/// dropped and the queue is empty.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: SyncSender<Box<dyn Work>>,
}

impl Writer {
    /// Start the writer thread on `conn` (which it locks for each batch: an in-memory database
    /// shares its one connection with the readers).
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> Result<Writer, StoreError> {
        let (jobs, queue) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, queue))
            .map_err(|e| StoreError::Backend(format!("could not start the store's writer: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Run `f` in the next transaction and wait until it is committed (or failed).
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = sync_channel(1);
        self.submit(Box::new(Job {
            f,
            reply: Reply::Blocking(reply),
        }))?;
        answer.recv().unwrap_or_else(|_| Err(lost()))
    }

    /// [`Writer::write`] without blocking the caller's thread.
    pub(super) fn write_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Job {
            f,
            reply: Reply::Async(reply),
        });
        // Queued now, in call order, not when the future is first polled.
        let queued = match self.jobs.try_send(job) {
            Ok(()) => None,
            Err(std::sync::mpsc::TrySendError::Full(job)) => Some(job),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Box::pin(async { Err(lost()) });
            }
        };
        let writer = self.clone();
        Box::pin(async move {
            if let Some(job) = queued {
                // A full queue: wait for room off the async threads.
                tokio::task::spawn_blocking(move || writer.submit(job))
                    .await
                    .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))??;
            }
            answer.await.unwrap_or_else(|_| Err(lost()))
        })
    }

    fn submit(&self, job: Box<dyn Work>) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| lost())
    }
}

fn lost() -> StoreError {
    StoreError::Backend("the store's writer stopped before answering (a write panicked?)".into())
}

/// A queued write: its work, and where its result goes once its transaction is over.
trait Work: Send {
    /// Do the work (inside the batch's savepoint); whether it succeeded, and how to answer.
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Box<dyn Finish>);
    /// Answer without running (the transaction could not be started).
    fn fail(self: Box<Self>, error: StoreError);
}

/// A write that ran, waiting for its transaction's commit.
trait Finish: Send {
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

enum Reply<T> {
    Blocking(SyncSender<Result<T, StoreError>>),
    Async(tokio::sync::oneshot::Sender<Result<T, StoreError>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, StoreError>) {
        // A caller that stopped waiting (a dropped future) needs no answer.
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

struct Job<T, F> {
    f: F,
    reply: Reply<T>,
}

struct Ran<T> {
    result: Result<T, StoreError>,
    reply: Reply<T>,
}

impl<T, F> Work for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Box<dyn Finish>) {
        let Job { f, reply } = *self;
        // A write that panics fails alone; the writer goes on with the others.
        let result = catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "a write panicked; it was rolled back".into(),
            ))
        });
        (result.is_ok(), Box::new(Ran { result, reply }))
    }

    fn fail(self: Box<Self>, error: StoreError) {
        self.reply.send(Err(error));
    }
}

impl<T: Send> Finish for Ran<T> {
    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match committed {
            Ok(()) => self.result,
            Err(e) => Err(e),
        };
        self.reply.send(result);
    }
}

fn run(conn: Arc<Mutex<Connection>>, queue: Receiver<Box<dyn Work>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A panic while holding the lock can't leave a half-written transaction behind
        // (SQLite rolls it back), so a poisoned lock is safe to reuse.
        let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        commit(&conn, batch);
    }
}

/// Run `batch` in one transaction, each write in its own savepoint, and answer each.
fn commit(conn: &Connection, batch: Vec<Box<dyn Work>>) {
    let mut ran: Vec<Box<dyn Finish>> = Vec::with_capacity(batch.len());
    let mut open = false;
    for work in batch {
        if !open {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                work.fail(e.into());
                continue;
            }
            open = true;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT write") {
            work.fail(e.into());
            continue;
        }
        let (ok, finish) = work.run(conn);
        if conn.is_autocommit() {
            // SQLite gave the whole transaction up (disk full, I/O error): what this batch
            // wrote so far is gone with it.
            let gone = StoreError::Backend(
                "the transaction was rolled back by the database (disk full or I/O error?)".into(),
            );
            for f in ran.drain(..) {
                f.finish(Err(gone.clone()));
            }
            finish.finish(if ok { Err(gone) } else { Ok(()) });
            open = false;
            continue;
        }
        let end = if ok {
            conn.execute_batch("RELEASE write")
        } else {
            conn.execute_batch("ROLLBACK TO write; RELEASE write")
        };
        match end {
            Ok(()) => ran.push(finish),
            Err(e) => {
                // The savepoint could not be closed; give the transaction up to be safe.
                let e = StoreError::from(e);
                let _ = conn.execute_batch("ROLLBACK");
                for f in ran.drain(..) {
                    f.finish(Err(e.clone()));
                }
                finish.finish(Err(e));
                open = false;
            }
        }
    }
    if !open {
        return;
    }
    let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for f in ran {
        f.finish(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (Writer, Arc<Mutex<Connection>>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            .unwrap();
        let conn = Arc::new(Mutex::new(conn));
        (Writer::start(conn.clone()).unwrap(), conn)
    }

    fn count(conn: &Mutex<Connection>) -> i64 {
        conn.lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failed_write_rolls_back_alone_and_the_others_commit() {
        let (w, conn) = writer();
        // Hold the connection so that the writes queue up and go in one batch.
        let guard = conn.lock().unwrap();
        let threads: Vec<_> = (0..20)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    w.write(move |c| {
                        let k = format!("k{i}");
                        c.execute("INSERT INTO t (k, v) VALUES (?1, 1)", [&k])?;
                        if i % 5 == 0 {
                            // Half done, then an error: its first row must not stay.
                            c.execute("INSERT INTO t (k, v) VALUES (?1, 2)", [&k])?;
                        }
                        Ok(i)
                    })
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(guard);
        for (i, t) in threads.into_iter().enumerate() {
            let r = t.join().unwrap();
            match i % 5 {
                0 => assert!(r.is_err(), "write {i}: {r:?}"),
                _ => assert_eq!(r.unwrap(), i),
            }
        }
        assert_eq!(count(&conn), 16);
        let stray: i64 = conn
            .lock()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM t WHERE k IN ('k0', 'k5', 'k10', 'k15')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stray, 0);
    }

    #[test]
    fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let (w, conn) = writer();
        let r: Result<(), _> = w.write(|c| {
            c.execute("INSERT INTO t (k, v) VALUES ('a', 1)", [])?;
            panic!("boom");
        });
        assert!(r.is_err());
        w.write(|c| Ok(c.execute("INSERT INTO t (k, v) VALUES ('b', 1)", [])?))
            .unwrap();
        assert_eq!(count(&conn), 1);
    }

    #[tokio::test]
    async fn queued_async_writes_all_commit_in_order() {
        let (w, conn) = writer();
        // Another thread holds the connection while the writes queue up.
        let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let holder = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let _guard = conn.lock().unwrap();
                held.0.send(()).unwrap();
                let _ = release.1.recv();
            })
        };
        held.1.recv().unwrap();
        let writes: Vec<_> = (0..100)
            .map(|i| {
                w.write_async(move |c| {
                    Ok(c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (format!("k{i}"), i))?)
                })
            })
            .collect();
        let all = tokio::spawn(futures_join(writes));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.0.send(()).unwrap();
        holder.join().unwrap();
        for r in all.await.unwrap() {
            assert_eq!(r.unwrap(), 1);
        }
        assert_eq!(count(&conn), 100);
        let last: String = conn
            .lock()
            .unwrap()
            .query_row("SELECT k FROM t ORDER BY rowid DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(last, "k99", "written in the order submitted");
    }

    async fn futures_join<T>(futs: Vec<BoxFuture<'static, T>>) -> Vec<T> {
        let mut out = Vec::new();
        for f in futs {
            out.push(f.await);
        }
        out
    }
}
