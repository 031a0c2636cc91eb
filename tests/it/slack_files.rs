//! Slack's external file upload (`files.getUploadURLExternal`, the bytes to `upload_url`,
//! `files.completeUploadExternal`) from the Slack client to the Slack stand-in over loopback:
//! where the file lands, how each step's failure is classified, and that neither the bytes nor
//! the bot token go anywhere but Slack's upload URL.

use std::time::Duration;

use redis_autoscaler::domain::{ChannelId, MessageTs, Secret};
use redis_autoscaler::http_client;
use redis_autoscaler::slack::Message;
use redis_autoscaler::slack::api::{FileUpload, SlackClient, SlackError};
use redis_autoscaler::standin::slack::{FakeSlack, FakeSlackHandle, Fault, UPLOAD_STEP};

const TOKEN: &str = "xoxb-test-token";
const GET_URL: &str = "files.getUploadURLExternal";
const COMPLETE: &str = "files.completeUploadExternal";
const TITLE: &str = "prod-jobs memory · run r-k3m9x2qa · start";

fn channel() -> ChannelId {
    ChannelId::parse("C0123ABCD").unwrap()
}

async fn slack() -> (FakeSlackHandle, SlackClient) {
    let fake = FakeSlack::spawn(TOKEN).await.unwrap();
    let client = SlackClient::new(
        fake.base_url(),
        Secret::new(TOKEN),
        http_client::build(Duration::from_secs(5)),
    );
    (fake, client)
}

/// A PNG-sized blob (about 48 kB) that starts like a PNG and doesn't repeat with a short
/// period, so a shifted or truncated copy doesn't compare equal.
fn png_bytes() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..48_000u32).map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8));
    bytes
}

fn graph() -> FileUpload {
    FileUpload {
        filename: "r-k3m9x2qa-memory-start.png".into(),
        title: TITLE.into(),
        alt_text: Some("Memory use of prod-jobs's nodes over the last 3h".into()),
        initial_comment: None,
        bytes: png_bytes(),
    }
}

/// The run's top message, whose thread the graph goes to.
async fn top_message(client: &SlackClient) -> MessageTs {
    client
        .post_message(&channel(), None, &Message::text("prod-jobs memory 93%"))
        .await
        .unwrap()
        .ts
}

fn methods(fake: &FakeSlackHandle) -> Vec<String> {
    fake.calls().into_iter().map(|c| c.method).collect()
}

#[tokio::test]
async fn a_png_lands_in_the_runs_thread_with_its_title_after_three_calls_in_order() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;

    let uploaded = client.upload_file(&channel(), &top, graph()).await.unwrap();

    assert_eq!(uploaded.title, TITLE);
    assert_eq!(
        methods(&fake),
        ["chat.postMessage", GET_URL, UPLOAD_STEP, COMPLETE]
    );
    let ask = &fake.calls()[1].body;
    assert_eq!(ask["filename"], "r-k3m9x2qa-memory-start.png");
    assert_eq!(ask["length"], png_bytes().len().to_string());
    assert_eq!(
        ask["alt_txt"],
        "Memory use of prod-jobs's nodes over the last 3h"
    );

    let files = fake.uploaded_files(&channel());
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file.file_id, uploaded.file_id.as_str());
    assert_eq!(file.title.as_deref(), Some(TITLE));
    assert_eq!(file.thread_ts.as_ref(), Some(&top));
    assert!(
        file.bytes.as_deref() == Some(png_bytes().as_slice()),
        "the bytes arrive exactly"
    );

    let thread = &fake.messages(&channel())[0];
    assert_eq!(thread.replies.len(), 1, "one reply, in the thread");
    assert_eq!(thread.replies[0].files[0]["title"], TITLE);
    assert!(
        fake.transcript(&channel())
            .contains(&format!("↳ [file: {TITLE}]")),
        "{}",
        fake.transcript(&channel())
    );

    let listed = client.thread_files(&channel(), &top).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].file_id, uploaded.file_id);
    assert_eq!(listed[0].title.as_deref(), Some(TITLE));
    assert_eq!(
        listed[0].name.as_deref(),
        Some("r-k3m9x2qa-memory-start.png")
    );
    assert_eq!(Some(&listed[0].message_ts), file.message_ts.as_ref());
}

#[tokio::test]
async fn a_rate_limit_on_asking_for_an_upload_url_is_retried_after_retry_after() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;
    fake.fail_next(
        GET_URL,
        1,
        Fault::RateLimited {
            retry_after_secs: 30,
        },
    );

    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();

    assert_eq!(
        err,
        SlackError::RateLimited {
            retry_after: Duration::from_secs(30)
        }
    );
    assert!(err.is_retryable());
    assert_eq!(fake.count(UPLOAD_STEP), 0, "no bytes without a URL");
    assert_eq!(fake.count(COMPLETE), 0);
    client.upload_file(&channel(), &top, graph()).await.unwrap();
    assert_eq!(fake.uploaded_files(&channel()).len(), 1);
}

#[tokio::test]
async fn ok_false_answers_are_api_errors_that_are_not_retried() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;

    fake.fail_next(GET_URL, 1, Fault::Error("file_uploads_disabled"));
    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SlackError::Api {
            method: GET_URL.into(),
            error: "file_uploads_disabled".into()
        }
    );
    assert!(!err.is_retryable());

    // A thread that isn't there: refused by the last step, after the bytes were sent.
    let nowhere = MessageTs::parse("1000000000.000100").unwrap();
    let err = client
        .upload_file(&channel(), &nowhere, graph())
        .await
        .unwrap_err();
    assert_eq!(err.api_error(), Some("thread_not_found"), "{err:?}");
    assert!(!err.is_retryable());

    let mut empty = graph();
    empty.bytes.clear();
    let err = client
        .upload_file(&channel(), &top, empty)
        .await
        .unwrap_err();
    assert_eq!(err.api_error(), Some("missing_argument"), "{err:?}");
    assert!(fake.uploaded_files(&channel()).is_empty());
}

#[tokio::test]
async fn an_upload_url_off_slacks_host_is_refused_and_no_bytes_are_sent_anywhere() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;
    // Another server on loopback: a different origin from the configured API base.
    let elsewhere = FakeSlack::spawn(TOKEN).await.unwrap();
    fake.set_upload_url_base(&format!("http://{}/upload/v1", elsewhere.addr()));

    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();

    assert!(matches!(err, SlackError::BadResponse(_)), "{err:?}");
    assert!(
        err.to_string().contains("outside Slack"),
        "the error says why: {err}"
    );
    assert!(
        !err.is_retryable(),
        "the same answer would be refused again"
    );
    assert!(elsewhere.calls().is_empty(), "{:?}", elsewhere.calls());
    assert_eq!(methods(&fake), ["chat.postMessage", GET_URL]);
    assert!(fake.files().iter().all(|f| f.bytes.is_none()));
}

#[tokio::test]
async fn the_bot_token_never_reaches_the_upload_url() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;

    client.upload_file(&channel(), &top, graph()).await.unwrap();

    let file = &fake.files()[0];
    assert!(!file.upload_had_authorization, "{file:?}");
    assert!(!file.upload_had_bot_token, "{file:?}");
    let upload = fake
        .calls()
        .into_iter()
        .find(|c| c.method == UPLOAD_STEP)
        .unwrap();
    assert_eq!(upload.body["authorization"], false);

    // The stand-in does notice a token when one is sent, so the checks above can fail.
    let http = http_client::build(Duration::from_secs(5));
    let ticket: serde_json::Value = http
        .post(format!("{}/{GET_URL}", fake.base_url()))
        .bearer_auth(TOKEN)
        .form(&[("filename", "x.png"), ("length", "3")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status = http
        .post(ticket["upload_url"].as_str().unwrap())
        .bearer_auth(TOKEN)
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let leaked = &fake.files()[1];
    assert!(leaked.upload_had_authorization && leaked.upload_had_bot_token);
}

#[tokio::test]
async fn a_failing_upload_step_is_classified_like_any_other_call() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;

    fake.fail_next(UPLOAD_STEP, 1, Fault::Http(503));
    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();
    assert_eq!(err, SlackError::Http { status: 503 });
    assert!(err.is_retryable());

    fake.fail_next(
        UPLOAD_STEP,
        1,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );
    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    assert_eq!(
        fake.count(COMPLETE),
        0,
        "nothing is completed without bytes"
    );
    assert!(fake.uploaded_files(&channel()).is_empty());
}

/// What the runner's retry relies on: when the last step fails after the bytes arrived, a
/// retry can tell whether the file was shared anyway before it uploads again.
#[tokio::test]
async fn a_retry_after_a_failed_completion_can_see_whether_the_file_was_shared() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;

    // Refused outright: the bytes are there, the file is not shared, a retry uploads again.
    fake.fail_next(COMPLETE, 1, Fault::Error("internal_error"));
    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();
    assert_eq!(err.api_error(), Some("internal_error"));
    assert!(err.is_retryable());
    assert!(fake.files()[0].bytes.is_some());
    assert!(!fake.files()[0].completed);
    assert!(
        client
            .thread_files(&channel(), &top)
            .await
            .unwrap()
            .is_empty()
    );

    // Shared, but the answer was lost: the retry finds the title in the thread.
    fake.fail_next(COMPLETE, 1, Fault::AcceptThenFail(502));
    let err = client
        .upload_file(&channel(), &top, graph())
        .await
        .unwrap_err();
    assert_eq!(err, SlackError::Http { status: 502 });
    assert!(err.is_retryable());
    let listed = client.thread_files(&channel(), &top).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|f| f.title.as_deref() == Some(TITLE))
            .count(),
        1,
        "{listed:?}"
    );
    assert_eq!(fake.uploaded_files(&channel()).len(), 1);
}

#[tokio::test]
async fn shared_files_are_also_written_to_the_folder_the_demo_asked_for() {
    let (fake, client) = slack().await;
    let top = top_message(&client).await;
    let dir = std::env::temp_dir().join(format!(
        "redis-autoscaler-slack-files-{}",
        fake.addr().port()
    ));
    fake.save_files_to(&dir);

    let uploaded = client.upload_file(&channel(), &top, graph()).await.unwrap();

    let path = dir.join(format!("{}-r-k3m9x2qa-memory-start.png", uploaded.file_id));
    let written = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(written == png_bytes(), "the file on disk is the upload");
    let _ = std::fs::remove_dir_all(&dir);
}
