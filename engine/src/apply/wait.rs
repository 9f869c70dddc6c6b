//! The waits of one step: drain, retries with backoff, health polls. Each ends at once on
//! cancel.

use super::{ApplyEvent, ApplyOptions, Inputs};
use crate::plan::error_chain;
use crate::provider::{Applied, ApplyContext, ApplyRequest, Health, Provider, ProviderError};
use crate::resource::ResourceId;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Drains a node cordoned for maintenance through its provider. Not retried: the provider
/// keeps trying until its own deadline, and a drain that did not finish is a decision for a
/// person (a budget that never allows the eviction, a pod that never stops).
pub(super) async fn drain(
    inputs: &Inputs<'_>,
    options: &ApplyOptions,
    id: &ResourceId,
    node: &ResourceId,
    cancel: &watch::Receiver<bool>,
) -> Result<(), String> {
    let provider = inputs.providers.for_id(node).ok_or_else(|| {
        format!(
            "cannot drain {node} before changing {id}: no provider named `{}` is configured",
            node.provider()
        )
    })?;
    let maintenance = provider.maintenance().ok_or_else(|| {
        format!(
            "cannot drain {node} before changing {id}: provider `{}` cannot drain nodes",
            provider.name()
        )
    })?;
    // Dropping the drain stops its evictions: the node stays cordoned, nothing is changed.
    let drained = tokio::select! {
        r = maintenance.drain(node, options.drain_timeout) => r,
        () = cancelled(cancel) => {
            return Err(format!("interrupted while draining {node} before changing {id}; not changed"));
        }
    };
    drained.map_err(|e| {
        format!(
            "cannot drain {node} before changing {id}: {}",
            error_chain(&e)
        )
    })
}

/// Cordons (`reason`) or releases (`None`) a node through its provider,
/// retrying transient errors like any other call.
pub(super) async fn maintain(
    inputs: &Inputs<'_>,
    options: &ApplyOptions,
    id: &ResourceId,
    node: &ResourceId,
    reason: Option<&str>,
    cancel: &watch::Receiver<bool>,
) -> Result<(), String> {
    let provider = inputs.providers.for_id(node).ok_or_else(|| {
        format!(
            "cannot cordon {node} before changing {id}: no provider named `{}` is configured",
            node.provider()
        )
    })?;
    let what = if reason.is_some() {
        "cordon"
    } else {
        "release"
    };
    let maintenance = provider.maintenance().ok_or_else(|| {
        format!(
            "cannot {what} {node}: provider `{}` cannot cordon nodes",
            provider.name()
        )
    })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match tokio::time::timeout(
            options.call_timeout,
            maintenance.cordon(node, reason),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ProviderError::transient(
                node,
                format!("no answer within {:?}", options.call_timeout),
            )),
        };
        match result {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && attempt < options.max_attempts => {
                if !pause(retry_delay(options, &e, attempt), cancel).await {
                    return Err(format!(
                        "cannot {what} {node}: interrupted before retrying: {}",
                        error_chain(&e)
                    ));
                }
            }
            Err(e) => {
                return Err(format!("cannot {what} {node}: {}", error_chain(&e)));
            }
        }
    }
}

/// The provider call with retries of transient errors.
pub(super) async fn apply_with_retries(
    provider: &dyn Provider,
    request: &ApplyRequest<'_>,
    cx: &ApplyContext,
    id: &ResourceId,
    options: &ApplyOptions,
    emit: &(dyn Fn(ApplyEvent) + Sync),
    cancel: &watch::Receiver<bool>,
) -> Result<Applied, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result =
            match tokio::time::timeout(options.call_timeout, provider.apply(request, cx)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::transient(
                    id,
                    format!("no answer within {:?}", options.call_timeout),
                )),
            };
        match result {
            Ok(a) => return Ok(a),
            Err(e) if e.is_transient() && attempt < options.max_attempts => {
                let delay = retry_delay(options, &e, attempt);
                emit(ApplyEvent::Retrying {
                    id: id.clone(),
                    attempt,
                    error: error_chain(&e),
                    delay_ms: delay.as_millis() as u64,
                });
                if !pause(delay, cancel).await {
                    return Err(format!(
                        "interrupted before retry {}: {}",
                        attempt + 1,
                        error_chain(&e)
                    ));
                }
            }
            Err(e) => {
                let suffix = if e.is_transient() {
                    format!(" (gave up after {attempt} attempts)")
                } else {
                    String::new()
                };
                return Err(format!("{}{suffix}", error_chain(&e)));
            }
        }
    }
}

/// Polls health until ready (not for deletes).
pub(super) async fn wait_healthy(
    provider: &dyn Provider,
    id: &ResourceId,
    applied: &Applied,
    options: &ApplyOptions,
    emit: &(dyn Fn(ApplyEvent) + Sync),
    cancel: &watch::Receiver<bool>,
) -> Result<(), String> {
    let deadline = Instant::now() + options.health_timeout;
    let mut last_message = String::new();
    loop {
        // The same bound as the apply call: a health check that hangs is a transient error.
        let health =
            match tokio::time::timeout(options.call_timeout, provider.health(id, &applied.spec))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ProviderError::transient(
                    id,
                    format!("health: no answer within {:?}", options.call_timeout),
                )),
            };
        match health {
            Ok(Health::Ready) => return Ok(()),
            Ok(Health::Failed(m)) => return Err(format!("{id}: applied but unhealthy: {m}")),
            Ok(Health::Progressing(m)) => {
                if m != last_message {
                    emit(ApplyEvent::WaitingHealthy {
                        id: id.clone(),
                        message: m.clone(),
                    });
                    last_message = m;
                }
            }
            Err(e) if e.is_transient() => last_message = error_chain(&e),
            Err(e) => return Err(error_chain(&e)),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{id}: not healthy after {:?}: {last_message}",
                options.health_timeout
            ));
        }
        if !pause(options.health_poll, cancel).await {
            return Err(format!(
                "{id}: applied, but interrupted while waiting for it to be healthy: {last_message}"
            ));
        }
    }
}

/// The delay before retrying after `e`: the provider's `Retry-After` when it gave one, else
/// the backoff; either way at most `max_backoff`, so a server asking for an hour cannot
/// hold an apply (and a shutdown) that long.
fn retry_delay(options: &ApplyOptions, e: &ProviderError, attempt: u32) -> Duration {
    e.retry_after
        .map_or_else(|| backoff(options, attempt), |d| d.min(options.max_backoff))
}

/// Sleeps `delay` unless the cancel signal turns true first; `false` when it did.
async fn pause(delay: Duration, cancel: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancelled(cancel) => false,
    }
}

/// Resolves once the cancel signal is true (at once if it already is). A dropped sender can
/// never cancel: then it never resolves.
async fn cancelled(cancel: &watch::Receiver<bool>) {
    let mut rx = cancel.clone();
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Exponential backoff with full jitter, capped.
pub(super) fn backoff(options: &ApplyOptions, attempt: u32) -> Duration {
    let exp = options
        .base_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let cap = exp.min(options.max_backoff);
    let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
    cap.mul_f64(jitter)
}
