//! The [`Graphs`] port: the group's memory over the policy's `graph_window`, read from
//! CloudWatch ([`MemorySeries`]), drawn ([`crate::chart`]) and uploaded into the run's thread
//! with Slack's files upload flow.
//!
//! A graph that can't be made is said in one short thread reply and is not an error: the run
//! goes on without it. Only what another try may fix (throttling, a 5xx, Slack's rate limit) is
//! a retryable failure, and a retry looks for the file an earlier try uploaded before it
//! uploads again (the file's title names the run and the moment).

use crate::chart::{ChartError, MemoryChart};
use crate::domain::Timestamp;
use crate::workflow::effect::GraphMoment;
use crate::workflow::ports::{
    Attempt, BoxFuture, ElastiCache, Failure, Graphs, MemoryError, MemoryQuery, MemorySeries,
};
use crate::workflow::run::{Step, Trigger};

use super::Message;
use super::api::{FileUpload, SlackClient};

/// [`Graphs`] over CloudWatch and Slack.
pub struct SlackGraphs {
    slack: SlackClient,
    memory: std::sync::Arc<dyn MemorySeries>,
    aws: std::sync::Arc<dyn ElastiCache>,
    /// Charts are drawn one at a time on one thread of their own: a drawing takes a core for
    /// milliseconds and a few MiB for its bitmap, and a thousand runs at once must not spend
    /// both on pictures while their snapshots and upsizes wait (the graphs arrive later, not
    /// the work). One thread also keeps the bitmaps in one allocator arena: drawn on the
    /// blocking pool, each of its threads' arenas grew by a bitmap (1,000 runs: 121 MiB peak,
    /// against 75 MiB with the arenas capped).
    /// Started with the first graph (an idle bot carries no thread for it).
    drawer: std::sync::Mutex<Option<Drawer>>,
    /// At most a few graphs are read, drawn and uploaded at once; the others wait their turn
    /// holding nothing (a storm of runs would otherwise hold a thousand series and answers).
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

impl SlackGraphs {
    pub fn new(
        slack: SlackClient,
        memory: std::sync::Arc<dyn MemorySeries>,
        aws: std::sync::Arc<dyn ElastiCache>,
    ) -> SlackGraphs {
        SlackGraphs {
            slack,
            memory,
            aws,
            drawer: std::sync::Mutex::new(None),
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(4)),
        }
    }

    /// Say in the thread why there is no graph (once; a lost answer may say it twice, which
    /// is harmless).
    async fn no_graph(&self, at: &mut Attempt, why: String) -> Result<(), Failure> {
        let Some(top) = at.run.message.clone() else {
            return Ok(());
        };
        let text = format!("📉 No memory graph: {why}");
        let posted = self
            .slack
            .post_message(&top.channel, Some(&top.ts), &Message::text(text.clone()))
            .await;
        match posted {
            Ok(p) => {
                at.log(
                    "slack",
                    "chat.postMessage",
                    format!("thread reply (ts {}): {text}", p.ts),
                );
                Ok(())
            }
            Err(e) => {
                at.log("slack", "chat.postMessage", format!("error: {e}"));
                Err(Failure::from(&e))
            }
        }
    }
}

/// Where drawings are sent to be done.
type Drawer = std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>;

/// The thread charts are drawn on (it ends when its sender is dropped).
fn drawer() -> Drawer {
    let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let spawned = std::thread::Builder::new()
        .name("chart".into())
        .spawn(move || {
            while let Ok(draw) = rx.recv() {
                // A drawing that panics fails alone (its answer is dropped: "stopped").
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(draw));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the chart thread; graphs will be notes");
    }
    tx
}

/// The file's title: what a retry looks for in the thread.
pub fn graph_title(run: &crate::workflow::run::Run, moment: GraphMoment) -> String {
    let when = match moment {
        GraphMoment::Posted if matches!(run.trigger, Trigger::ScaleDown { .. }) => {
            "over the scale-down window"
        }
        GraphMoment::Posted => "at the alarm",
        GraphMoment::Ended => "at the end",
    };
    format!("{} memory {when} ({})", run.group, run.id)
}

impl Graphs for SlackGraphs {
    fn post_graph<'a>(
        &'a self,
        at: &'a mut Attempt,
        moment: GraphMoment,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                // A run that ended before its message went up: the graph follows it.
                return Err(Failure::transient(
                    "the top message is not posted yet",
                    None,
                ));
            };
            let _turn = self.in_flight.acquire().await;
            let title = graph_title(&at.run, moment);
            if at.maybe_done_before {
                match self.slack.thread_files(&top.channel, &top.ts).await {
                    Ok(files) if files.iter().any(|f| f.title.as_deref() == Some(&title)) => {
                        at.log(
                            "slack",
                            "files",
                            format!("“{title}” is already in the thread"),
                        );
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        at.log("slack", "conversations.replies", format!("error: {e}"));
                        return Err(Failure::transient(
                            format!("could not look for an earlier upload: {e}"),
                            e.retry_after(),
                        ));
                    }
                }
            }
            // The members now (a graph reads; it never acts, so a fresh look is all it needs).
            let group = match self.aws.describe_group(&at.run.group).await {
                Ok(g) => g,
                Err(e) if e.is_retryable() => {
                    at.log("aws", "DescribeReplicationGroups", format!("error: {e}"));
                    return Err(Failure::transient(e.to_string(), None));
                }
                Err(e) => {
                    return self
                        .no_graph(at, format!("the group could not be read ({e})."))
                        .await;
                }
            };
            let end = at.now;
            // A scale-down suggestion's graph is its evidence: the whole window it judged.
            let window = match &at.run.trigger {
                Trigger::ScaleDown { evidence, .. } if moment == GraphMoment::Posted => {
                    evidence.window
                }
                _ => at.run.policy.graph_window,
            };
            let start = Timestamp::from_millis(end.as_millis() - window.as_millis() as i64);
            let query = MemoryQuery::for_window(at.run.group.clone(), group.members, start, end);
            let series = match self.memory.memory_usage(&query).await {
                Ok(s) => s,
                Err(e @ MemoryError::Transient { .. }) => {
                    at.log("aws", "GetMetricData", format!("error: {e}"));
                    return Err(Failure::transient(e.to_string(), None));
                }
                Err(e @ MemoryError::Denied { .. }) => {
                    at.log("aws", "GetMetricData", format!("error: {e}"));
                    let why = format!(
                        "the bot may not read CloudWatch metrics ({e}); give its role `cloudwatch:GetMetricData`."
                    );
                    return self.no_graph(at, why).await;
                }
                Err(e) => {
                    at.log("aws", "GetMetricData", format!("error: {e}"));
                    return self.no_graph(at, format!("CloudWatch said {e}.")).await;
                }
            };
            let points: usize = series.iter().map(|s| s.points.len()).sum();
            at.log(
                "aws",
                "GetMetricData",
                format!("{points} point(s) for {} node(s)", series.len()),
            );
            // Drawing and encoding take milliseconds of CPU: off the async threads.
            let group_id = at.run.group.clone();
            let alarm = match &at.run.trigger {
                Trigger::Alarm { at: fired, .. } => Some(*fired),
                Trigger::Command { .. } | Trigger::Forecast { .. } | Trigger::ScaleDown { .. } => {
                    None
                }
            };
            let threshold = at.run.trigger.threshold();
            let scale_down = matches!(at.run.trigger, Trigger::ScaleDown { .. });
            let upsize = (at.run.steps.iter().find(|s| s.step == Step::Upsize))
                .map(|u| (u.started, u.ended));
            let (done, drawn) = tokio::sync::oneshot::channel();
            let draw = move || {
                let mut chart = MemoryChart::new(&group_id, &series, start, end);
                if let Some(fired) = alarm {
                    chart = chart.alarm_at(fired);
                }
                if let Some(t) = threshold {
                    chart = chart.threshold(t);
                }
                if scale_down {
                    chart = chart.threshold_label("must stay below");
                }
                if let Some((started, ended)) = upsize {
                    chart = chart.upsize(started, ended);
                }
                let _ = done.send(chart.render_png());
            };
            let sent = (self.drawer.lock()).map_err(|_| ()).and_then(|mut d| {
                d.get_or_insert_with(drawer)
                    .send(Box::new(draw))
                    .map_err(|_| ())
            });
            let drawn = match sent {
                Ok(()) => drawn
                    .await
                    .unwrap_or_else(|_| Err(ChartError::Draw("the drawing thread stopped".into()))),
                Err(()) => Err(ChartError::Draw("the drawing thread stopped".into())),
            };
            let png = match drawn {
                Ok(png) => png,
                Err(ChartError::NoData) => {
                    let why = format!(
                        "CloudWatch has no {} for the group's nodes in the last {}.",
                        crate::workflow::ports::memory::MEMORY_METRIC,
                        crate::domain::format_duration(at.run.policy.graph_window)
                    );
                    return self.no_graph(at, why).await;
                }
                Err(e) => {
                    return self
                        .no_graph(at, format!("it could not be drawn ({e})."))
                        .await;
                }
            };
            let filename = format!("{}-memory-{}.png", at.run.id, moment.as_str());
            let alt = format!(
                "Memory use of {}'s nodes over the last {}",
                at.run.group,
                crate::domain::format_duration(at.run.policy.graph_window)
            );
            let file = FileUpload {
                filename,
                title: title.clone(),
                alt_text: Some(alt),
                initial_comment: None,
                bytes: png,
            };
            let uploaded = self.slack.upload_file(&top.channel, &top.ts, file).await;
            match uploaded {
                Ok(file) => {
                    at.log(
                        "slack",
                        "files.completeUploadExternal",
                        format!("“{title}” uploaded ({})", file.file_id),
                    );
                    Ok(())
                }
                Err(e) => {
                    at.log("slack", "files.upload", format!("error: {e}"));
                    Err(Failure::from(&e))
                }
            }
        })
    }
}
