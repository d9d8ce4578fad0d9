//! The runner protocol end to end in one process: a fake model served by
//! `host::serve`, used through `RunnerModel`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::time::Duration;

use shelf_engine::fake::{FakeModel, Gate};
use shelf_engine::{EngineError, Event, FinishReason, GenerateRequest, LoadedModel, Token};
use shelf_runner::client::in_process;
use shelf_runner::frame::{self, FrameError, MAX_FRAME};
use shelf_runner::proto::{FromRunner, ToRunner};

async fn collect(
    mut generation: shelf_engine::Generation,
) -> (String, Option<shelf_engine::Completion>) {
    let mut text = String::new();
    while let Some(event) = generation.next().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Logprob(_) | Event::PromptLogprobs(_) => {}
            Event::Done(c) => return (text, Some(c)),
            Event::Failed(e) => panic!("failed: {e}"),
        }
    }
    (text, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_cross_the_socket_whole_and_in_order() {
    let fake: Arc<dyn LoadedModel> = Arc::new(FakeModel::new("hello, runner", 64).with_slots(4));
    let runner = Arc::new(
        in_process(fake, tokio::runtime::Handle::current())
            .await
            .unwrap(),
    );
    assert_eq!(runner.info().slots, 4);
    let tokens = {
        let runner = Arc::clone(&runner);
        tokio::task::spawn_blocking(move || runner.tokenize("abc"))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        tokens,
        vec![Token('a' as i32), Token('b' as i32), Token('c' as i32)]
    );
    let generations: Vec<_> = (0..4)
        .map(|_| runner.submit(GenerateRequest::new(tokens.clone())).unwrap())
        .collect();
    for generation in generations {
        let (text, completion) = collect(generation).await;
        assert_eq!(text, "hello, runner");
        let completion = completion.unwrap();
        assert_eq!(completion.finish_reason, FinishReason::Stop);
        assert_eq!(completion.usage.prompt_tokens, 3);
        assert_eq!(completion.usage.completion_tokens, 13);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_at_submit_and_the_runner_keeps_serving() {
    let fake: Arc<dyn LoadedModel> = Arc::new(FakeModel::new("ok", 8));
    let runner = in_process(fake, tokio::runtime::Handle::current())
        .await
        .unwrap();
    assert!(matches!(
        runner.submit(GenerateRequest::new(vec![Token(1); 8])),
        Err(EngineError::PromptTooLong {
            prompt_tokens: 8,
            n_ctx: 8
        })
    ));
    let (text, _) = collect(runner.submit(GenerateRequest::new(vec![Token(1)])).unwrap()).await;
    assert_eq!(text, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_generation_is_cancelled_in_the_runner() {
    let gate = Gate::closed();
    let fake = FakeModel::new(&"x".repeat(10_000), 64).with_gate(&gate);
    let control = fake.control();
    let runner = in_process(Arc::new(fake), tokio::runtime::Handle::current())
        .await
        .unwrap();
    let generation = runner.submit(GenerateRequest::new(vec![Token(1)])).unwrap();
    drop(generation);
    gate.open();
    // The fake stops within a token once the cancel arrives.
    tokio::time::timeout(Duration::from_secs(5), async {
        while control.running() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the runner never cancelled the generation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_crashes_fails_its_generations() {
    let gate = Gate::closed();
    let fake = FakeModel::new("never", 64).with_gate(&gate);
    let control = fake.control();
    let runner = in_process(Arc::new(fake), tokio::runtime::Handle::current())
        .await
        .unwrap();
    let mut generation = runner.submit(GenerateRequest::new(vec![Token(1)])).unwrap();
    control.crash("aborted (signal 6)");
    gate.open();
    assert_eq!(
        generation.next().await,
        Some(Event::Failed(EngineError::Crashed(
            "aborted (signal 6)".into()
        )))
    );
}

#[tokio::test]
async fn oversized_and_garbled_frames_are_errors_not_allocations() {
    let mut oversized: &[u8] = &(MAX_FRAME + 1).to_le_bytes();
    assert!(matches!(
        frame::read::<ToRunner>(&mut oversized).await,
        Err(FrameError::TooLarge(_))
    ));
    let mut garbled = 5u32.to_le_bytes().to_vec();
    garbled.extend_from_slice(b"{\"ty");
    assert!(matches!(
        frame::read::<ToRunner>(&mut garbled.as_slice()).await,
        Err(FrameError::Io(_))
    ));
    let mut wrong = 2u32.to_le_bytes().to_vec();
    wrong.extend_from_slice(b"[]");
    assert!(matches!(
        frame::read::<FromRunner>(&mut wrong.as_slice()).await,
        Err(FrameError::Malformed(_))
    ));
    let mut empty: &[u8] = &[];
    assert!(frame::read::<ToRunner>(&mut empty).await.unwrap().is_none());
}

mod fuzz {
    use proptest::prelude::*;
    use shelf_runner::frame;
    use shelf_runner::proto::{FromRunner, ToRunner};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes are an error or a message, never a panic.
        #[test]
        fn any_body_parses_or_fails_cleanly(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = frame::decode::<ToRunner>(&body);
            let _ = frame::decode::<FromRunner>(&body);
        }

        /// Valid messages with fields mangled stay errors, not panics.
        #[test]
        fn mangled_messages_fail_cleanly(id in any::<u64>(), cut in 0usize..200, byte in any::<u8>()) {
            let json = format!(
                r#"{{"type":"events","events":[[{id},{{"type":"done","completion":{{"finish_reason":"stop","prompt_tokens":1,"completion_tokens":2,"cached_tokens":0,"prefill_ms":1.0,"decode_ms":1.0,"decoded_tokens":1}}}}]]}}"#
            );
            let mut bytes = json.into_bytes();
            let at = cut.min(bytes.len().saturating_sub(1));
            bytes[at] = byte;
            let _ = frame::decode::<FromRunner>(&bytes);
            bytes.truncate(at);
            let _ = frame::decode::<FromRunner>(&bytes);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_reports_the_generations_running() {
    let gate = Gate::closed();
    let fake = FakeModel::new("ok", 64).with_gate(&gate);
    let runner = in_process(Arc::new(fake), tokio::runtime::Handle::current())
        .await
        .unwrap();
    let timeout = Duration::from_secs(5);
    assert_eq!(runner.ping(timeout).await.unwrap().running, 0);
    let held: Vec<_> = (0..3)
        .map(|_| runner.submit(GenerateRequest::new(vec![Token(1)])).unwrap())
        .collect();
    // Frames are handled in order: the submits are in before the ping.
    assert_eq!(runner.ping(timeout).await.unwrap().running, 3);
    gate.open();
    for generation in held {
        collect(generation).await;
    }
    assert_eq!(runner.ping(timeout).await.unwrap().running, 0);
}
