//! Alarms from an SQS queue (issue 12, no inbound port): the bot long-polls the simulator's
//! queue with the real aws-sdk-sqs client, hands each alarm to the same use case as
//! `POST /alarms/eventbridge`, deletes a message only once its outcome is committed, and
//! leaves what it cannot take for the queue: a failure comes back after the visibility timeout,
//! poison goes to the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use redis_autoscaler::alarm::sqs::SqsIntake;
use redis_autoscaler::elasticache::sdk::{SdkElastiCache, config_for_endpoint};
use redis_autoscaler::elasticache::sim::SimQueue;
use redis_autoscaler::startup::{Application, Deps, stopped};
use redis_autoscaler::workflow::ports::SystemClock;
use redis_autoscaler::workflow::runner::RunnerOptions;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::*;

const QUEUE: &str = "redis-alarms";
const DEAD: &str = "redis-alarms-dlq";
const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/redis-alarms";
/// The queue's redrive policy: a message received this often goes to the dead-letter queue.
const MAX_RECEIVES: u32 = 3;

/// The test config (runs approved by policy, so a run goes to its end by itself) with the queue;
/// the simulator's SQS second is 20 ms, so a 1 s long poll lasts 20 ms and a 5 s visibility
/// timeout 100 ms.
fn sqs_config() -> String {
    let mut c = config_text("approval = \"auto\"", "");
    c.push_str(&format!(
        "\n[alarms]\nsqs_queue_url = \"{QUEUE_URL}\"\nsqs_wait = \"1s\"\nsqs_retry_interval = \"10ms\"\n"
    ));
    c
}

/// The queue and its dead-letter queue, as the CloudFormation template makes them (in
/// compressed time).
fn queues(services: &Services) {
    let second = Duration::from_millis(20);
    services
        .sim
        .create_queue(SimQueue::new(DEAD).second(second));
    let url = services.sim.create_queue(
        SimQueue::new(QUEUE)
            .visibility_timeout(5)
            .dead_letter(DEAD, MAX_RECEIVES)
            .second(second),
    );
    assert_eq!(url, QUEUE_URL);
}

/// An SQS client for the simulator, as a sender (EventBridge, SNS) would use it.
fn sqs_client(services: &Services) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&config_for_endpoint(&services.sim.endpoint()))
}

async fn send(services: &Services, body: &str) -> String {
    let sent = sqs_client(services)
        .send_message()
        .queue_url(QUEUE_URL)
        .message_body(body)
        .send()
        .await
        .unwrap();
    sent.message_id().unwrap().to_string()
}

/// The intake the bot runs, on its own (so that a test can kill it as a crash would).
struct Intake {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Intake {
    fn start(services: &Services, t: &TestApp) -> Intake {
        let sdk = config_for_endpoint(&services.sim.endpoint());
        let intake = SqsIntake::new(&sdk, &t.app.config.alarms).expect("the config names a queue");
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(intake.run(t.app.clone(), stopped(rx)));
        Intake { stop, task }
    }

    /// As on SIGTERM: it returns promptly, even in the middle of a long poll.
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the intake stops promptly")
            .expect("the intake did not panic");
    }
}

async fn spawn(services: &Services, dir: &TempDir) -> TestApp {
    queues(services);
    TestApp::spawn(services, &sqs_config(), &dir.db()).await
}

async fn deliveries(t: &TestApp, id: &str) -> usize {
    let all = t.store.recent_alarms(100).await.unwrap();
    all.iter().filter(|a| a.delivery_id == id).count()
}

async fn queue_empty(services: &Services) {
    eventually("the message to be deleted", || {
        services.sim.queue_messages(QUEUE).is_empty()
    })
    .await;
}

#[tokio::test]
async fn an_alarm_on_the_queue_runs_to_success_and_is_deleted_once_committed() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = spawn(&services, &dir).await;
    let intake = Intake::start(&services, &t);
    send(&services, &eventbridge_event("q-1", GROUP, "ALARM", 93.2)).await;
    queue_empty(&services).await;
    // Deleted after the commit: the delivery and its run are in the store by then.
    assert_eq!(deliveries(&t, "eventbridge:q-1").await, 1);
    let run = t.store.active_run(&group()).await.unwrap();
    let run = match run {
        Some(run) => run.id,
        None => t.store.recent_runs(None, 1).await.unwrap()[0].id.clone(),
    };
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge"))
    );
    assert!(services.top_messages()[0].rendered().contains("93.2%"));
    assert_eq!(services.sim.count("DeleteMessage"), 1);
    // Each receive asked for up to 10 messages, a long poll, and the receive count.
    let receive = services
        .sim
        .calls()
        .into_iter()
        .find(|c| c.action == "ReceiveMessage")
        .unwrap();
    assert_eq!(receive.param("MaxNumberOfMessages"), Some("10"));
    assert_eq!(receive.param("WaitTimeSeconds"), Some("1"));
    assert_eq!(receive.param("QueueUrl"), Some(QUEUE_URL));
    intake.stop().await;
    t.stop().await;
}

#[tokio::test]
async fn a_crash_between_commit_and_delete_makes_the_redelivery_change_nothing() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = spawn(&services, &dir).await;
    // The outcome is committed, then the delete fails (as if the process died right there).
    services.sim.deny_action("DeleteMessage");
    let intake = Intake::start(&services, &t);
    send(
        &services,
        &eventbridge_event("q-crash", GROUP, "ALARM", 95.0),
    )
    .await;
    eventually("the failed delete", || {
        services.sim.attempts("DeleteMessage") >= 1
    })
    .await;
    // Killed, not stopped: nothing runs after the failed delete.
    intake.task.abort();
    let _ = intake.task.await;
    assert_eq!(deliveries(&t, "eventbridge:q-crash").await, 1);
    let mut faults = services.sim.faults();
    faults.denied_actions.clear();
    services.sim.set_faults(faults);
    // The bot comes back; the message comes back after its visibility timeout.
    let intake = Intake::start(&services, &t);
    queue_empty(&services).await;
    let runs = t.store.recent_runs(Some(&group()), 10).await.unwrap();
    assert_eq!(runs.len(), 1, "one run");
    assert_eq!(
        deliveries(&t, "eventbridge:q-crash").await,
        1,
        "one delivery record"
    );
    let done = t.wait_done(&runs[0].id).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.top_messages().len(), 1, "one top message");
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    let receives = services.sim.attempts("ReceiveMessage");
    assert!(receives >= 2, "{receives}");
    intake.stop().await;
    t.stop().await;
}

#[tokio::test]
async fn a_poison_message_is_logged_escaped_and_ends_in_the_dead_letter_queue() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = spawn(&services, &dir).await;
    let intake = Intake::start(&services, &t);
    let forged = "not an alarm\n2026-01-01T00:00:00Z  INFO approved by @boss-sqs-poison \u{1b}[31m";
    let poison = send(&services, forged).await;
    let not_alarm = json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "id": "x"});
    send(&services, &not_alarm.to_string()).await;
    eventually("the poison in the dead-letter queue", || {
        services.sim.queue_messages(DEAD).len() == 2
    })
    .await;
    assert!(services.sim.queue_messages(QUEUE).is_empty());
    let dead = services.sim.queue_messages(DEAD);
    assert_eq!(dead[0].id, poison);
    assert_eq!(dead[0].body, forged);
    // Received maxReceiveCount times, never deleted, never a run.
    assert_eq!(services.sim.attempts("DeleteMessage"), 0);
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    assert!(!intake.task.is_finished(), "the intake goes on");
    // Logged, one JSON record per line, the forged line inside a field.
    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    let poisoned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("@boss-sqs-poison"))
        .collect();
    assert!(poisoned.len() >= MAX_RECEIVES as usize, "{poisoned:?}");
    for line in &poisoned {
        let record: Value = serde_json::from_str(line).expect("one JSON record per line");
        let fields = &record["fields"];
        assert!(
            fields["message"]
                .as_str()
                .unwrap()
                .contains("not a CloudWatch alarm"),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "{line}");
    }
    // And the next alarm is taken as ever.
    send(
        &services,
        &eventbridge_event("q-after", GROUP, "ALARM", 93.2),
    )
    .await;
    queue_empty(&services).await;
    assert_eq!(deliveries(&t, "eventbridge:q-after").await, 1);
    intake.stop().await;
    t.stop().await;
}

#[tokio::test]
async fn an_sns_wrapped_alarm_on_the_queue_starts_a_run() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = spawn(&services, &dir).await;
    let intake = Intake::start(&services, &t);
    let alarm = json!({
        "AlarmName": format!("Redis memory: {GROUP}"),
        "AlarmDescription": format!("Redis memory: {GROUP} above 90%"),
        "AWSAccountId": "123456789012",
        "NewStateValue": "ALARM",
        "NewStateReason": "Threshold Crossed: 1 out of the last 1 datapoints [94.0 (26/11/26 03:12:00)] was greater than the threshold (90.0)",
        "StateChangeTime": "2026-11-26T03:12:00.000+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:Redis memory: {GROUP}"),
        "OldStateValue": "OK",
        "Trigger": { "MetricName": "DatabaseMemoryUsagePercentage", "Namespace": "AWS/ElastiCache",
                     "Dimensions": [{ "value": GROUP, "name": "ReplicationGroupId" }] }
    });
    // As SNS delivers to an SQS subscription without raw message delivery.
    let envelope = json!({
        "Type": "Notification",
        "MessageId": "5b2f3c1e-sns-sqs-0001",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:redis-alarms",
        "Subject": format!("ALARM: \"Redis memory: {GROUP}\" in US East (N. Virginia)"),
        "Message": alarm.to_string(),
        "Timestamp": "2026-11-26T03:12:01.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"
    });
    send(&services, &envelope.to_string()).await;
    queue_empty(&services).await;
    let alarms = t.store.recent_alarms(10).await.unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].delivery_id, "sns:5b2f3c1e-sns-sqs-0001");
    assert_eq!(alarms[0].outcome, "started");
    let runs = t.store.recent_runs(Some(&group()), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    t.wait_done(&runs[0].id).await;
    // Nothing was fetched from SNS: the queue's policy, not a signature, decides who may send.
    assert!(t.sns.gets.lock().unwrap().is_empty());
    intake.stop().await;
    t.stop().await;
}

#[tokio::test]
async fn a_throttled_receive_backs_off_and_keeps_polling() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = spawn(&services, &dir).await;
    services.sim.throttle_action("ReceiveMessage");
    send(
        &services,
        &eventbridge_event("q-throttled", GROUP, "ALARM", 93.2),
    )
    .await;
    let intake = Intake::start(&services, &t);
    eventually("three throttled receives", || {
        services.sim.attempts("ReceiveMessage") >= 3
    })
    .await;
    // 10 ms, then 20, 40, 80, 160, 320 ms: a handful of calls in half a second, not hundreds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let throttled = services.sim.attempts("ReceiveMessage");
    assert!((3..=9).contains(&throttled), "{throttled} receives");
    assert!(!intake.task.is_finished());
    services.sim.unthrottle_action("ReceiveMessage");
    queue_empty(&services).await;
    assert_eq!(deliveries(&t, "eventbridge:q-throttled").await, 1);
    intake.stop().await;
    t.stop().await;
}

#[tokio::test]
async fn the_simulator_answers_sqs_errors_the_way_the_sdk_parses_them() {
    let services = Services::start(sim_config()).await;
    queues(&services);
    let sqs = sqs_client(&services);
    let missing = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue";
    let err = sqs
        .receive_message()
        .queue_url(missing)
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_queue_does_not_exist(), "{err:?}");
    services.sim.throttle_action("ReceiveMessage");
    let err = sqs
        .receive_message()
        .queue_url(QUEUE_URL)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_request_throttled(), "{err:?}");
    services.sim.unthrottle_action("ReceiveMessage");
    let err = sqs
        .delete_message()
        .queue_url(QUEUE_URL)
        .receipt_handle("made-up")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_receipt_handle_is_invalid(), "{err:?}");
    // A message: received with its count, hidden, deleted by its handle.
    let id = send(&services, "hello").await;
    let got = sqs
        .receive_message()
        .queue_url(QUEUE_URL)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .unwrap();
    let m = &got.messages()[0];
    assert_eq!(
        (m.message_id(), m.body()),
        (Some(id.as_str()), Some("hello"))
    );
    let count = m.attributes().unwrap()
        [&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount]
        .clone();
    assert_eq!(count, "1");
    let none = sqs
        .receive_message()
        .queue_url(QUEUE_URL)
        .send()
        .await
        .unwrap();
    assert!(none.messages().is_empty(), "hidden while in flight");
    sqs.delete_message()
        .queue_url(QUEUE_URL)
        .receipt_handle(m.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    assert!(services.sim.queue_messages(QUEUE).is_empty());
    let url = sqs.get_queue_url().queue_name(QUEUE).send().await.unwrap();
    assert_eq!(url.queue_url(), Some(QUEUE_URL));
    // A rehearsal against `elasticache-sim` makes its queues with CreateQueue.
    let made = sqs
        .create_queue()
        .queue_name("rehearsal")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "45")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": format!("arn:aws:sqs:us-east-1:123456789012:{DEAD}"), "maxReceiveCount": "4"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let made = made.queue_url().unwrap().to_string();
    assert_eq!(
        made,
        "https://sqs.us-east-1.amazonaws.com/123456789012/rehearsal"
    );
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&made)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    let get = |n: aws_sdk_sqs::types::QueueAttributeName| attributes[&n].clone();
    assert_eq!(
        get(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout),
        "45"
    );
    let redrive: Value =
        serde_json::from_str(&get(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)).unwrap();
    assert_eq!(redrive["maxReceiveCount"], 4);
}

#[tokio::test]
async fn serve_polls_the_configured_queue_and_stops_cleanly_in_a_long_poll() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    // Real seconds: a long poll in flight lasts 20 s unless the stop abandons it.
    services.sim.create_queue(SimQueue::new(QUEUE));
    captured_logs();
    let mut config = redis_autoscaler::config::Config::parse(&sqs_config(), &services.env())
        .unwrap_or_else(|e| panic!("{e}"));
    config.database = dir.db();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.alarms.sqs_wait = Duration::from_secs(20);
    let aws = config_for_endpoint(&services.sim.endpoint());
    let store = open_store(&dir.db()).await;
    let deps = Deps {
        store: store.clone(),
        aws: Arc::new(SdkElastiCache::new(&aws)),
        memory: Arc::new(redis_autoscaler::cloudwatch::SdkCloudWatch::new(&aws)),
        prices: Some(Arc::new(redis_autoscaler::pricing::SdkPrices::new(
            &aws,
            &config.pricing.region,
        ))),
        clock: Arc::new(SystemClock),
        sns_http: Arc::new(RecordingSnsHttp::default()),
        home: redis_autoscaler::startup::home(&config, &aws)
            .await
            .unwrap(),
        places: None,
        options: RunnerOptions::default(),
    };
    let bot = Application::build(config, deps)
        .await
        .unwrap()
        .with_sqs(&aws);
    let (stop, rx) = watch::channel(false);
    let running = tokio::spawn(bot.run_until_stopped(stopped(rx)));
    send(
        &services,
        &eventbridge_event("q-serve", GROUP, "ALARM", 93.2),
    )
    .await;
    queue_empty(&services).await;
    let alarms = store.recent_alarms(10).await.unwrap();
    assert_eq!(alarms[0].delivery_id, "eventbridge:q-serve");
    // Let the runner finish the run's work, then stop while a 20 s poll waits.
    let run = store.recent_runs(None, 1).await.unwrap()[0].id.clone();
    eventually_async("the run to finish", || {
        let store = store.clone();
        let run = run.clone();
        async move {
            let r = store.run(&run).await.unwrap().unwrap();
            r.is_finished() && store.pending_effects(Some(&run)).await.unwrap().is_empty()
        }
    })
    .await;
    let polls = services.sim.attempts("ReceiveMessage");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("serve stops promptly")
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        services.sim.attempts("ReceiveMessage"),
        polls,
        "no polling after the stop"
    );
}
