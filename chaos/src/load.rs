//! The load: jobs of four kinds submitted at a steady rate, each to one replica and, on a
//! connection error or a 5xx, to the other, always with the same idempotency key; the
//! `sleeper` jobs are cancelled a second after they are acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::TOKEN;
use crate::ctx::{now_ms, Ctx, Try, TryOutcome};
use crate::kind::{Acked, Kind};

/// Submits `jobs` evenly over `spread` and waits for every submit to finish.
pub async fn load(ctx: Arc<Ctx>, jobs: usize, spread: Duration, run_tag: String) {
    let gap = spread / (jobs.max(1) as u32);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for index in 0..jobs {
        tokio::time::sleep_until(start + gap * index as u32).await;
        tasks.push(tokio::spawn(submit(ctx.clone(), index, run_tag.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Submits job `index` until a replica acknowledges it (for up to 30 s).
async fn submit(ctx: Arc<Ctx>, index: usize, run_tag: String) {
    let kind = Kind::of(index);
    let mut body = json!({
        "agent": kind.agent(),
        "task": format!("chaos job {index}"),
        "idempotency_key": format!("{run_tag}-{index}"),
    });
    if index.is_multiple_of(4) {
        body["concurrency_key"] = json!(format!("ck-{}", index % 3));
    }
    let submitted_ms = now_ms();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut replica = index % 2;
    let mut tries = 0u64;
    while Instant::now() < deadline {
        tries += 1;
        let sent_ms = now_ms();
        let r = ctx
            .http
            .post(ctx.url(replica, "/v1/jobs"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await;
        let answer = match r {
            Ok(r) => {
                let status = r.status().as_u16();
                Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
            }
            Err(_) => None,
        };
        let id = match &answer {
            Some((200 | 202, value)) => value["id"].as_str().map(str::to_string),
            _ => None,
        };
        let outcome = match (&answer, &id) {
            (_, Some(_)) => TryOutcome::Acknowledged,
            (None, _) => TryOutcome::NoAnswer,
            (Some((503, _)), _) => TryOutcome::Refused,
            (Some((status, _)), _) if *status >= 500 => TryOutcome::Failed,
            (Some(_), _) => TryOutcome::Other,
        };
        let answered_ms = now_ms();
        ctx.stats.tries.lock().expect("lock").push(Try {
            sent_ms,
            answered_ms,
            outcome,
        });
        if let Some(id) = id {
            ctx.stats.acked.lock().expect("lock").push(Acked {
                index,
                kind,
                id: id.clone(),
                submitted_ms,
                acked_ms: answered_ms,
            });
            ctx.stats
                .submit_retries
                .fetch_add(tries - 1, Ordering::Relaxed);
            if kind == Kind::Cancel {
                tokio::spawn(cancel_later(ctx.clone(), id, replica));
            }
            return;
        }
        if let Some((status, value)) = &answer {
            if *status < 500 && !matches!(status, 200 | 202) {
                eprintln!("submit {index}: unexpected {status}: {value}");
                break;
            }
        }
        replica = 1 - replica;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ctx.stats.unacked.fetch_add(1, Ordering::Relaxed);
}

/// Cancels job `id` a second from now, trying both replicas for up to 30 s; counts the
/// answer.
async fn cancel_later(ctx: Arc<Ctx>, id: String, first: usize) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut replica = first;
    let mut outcome = "gave up".to_string();
    while Instant::now() < deadline {
        let r = ctx
            .http
            .post(ctx.url(replica, &format!("/v1/jobs/{id}/cancel")))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status().as_u16();
            if status < 500 {
                outcome = status.to_string();
                break;
            }
        }
        replica = 1 - replica;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    *ctx.stats
        .cancel_results
        .lock()
        .expect("lock")
        .entry(outcome)
        .or_default() += 1;
}
