//! Reading `object_store`'s errors for the S3 backend: the text of an error chain (what the
//! messages quote; never a credential: its messages name the method and URL only), whether a
//! request never reached the server, and sending again a request hyper canceled unsent.

use std::time::Duration;

/// Runs `request` again, with backoff, while it fails unsent: hyper cancels a request whose
/// pooled connection it finds closed (`connection was not ready`: the server went away, and may
/// be back), an error `object_store` does not retry. Never sent, it may be sent again, a
/// conditional `PUT` too.
pub(super) async fn resent<T, F, Fut>(request: F) -> object_store::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut wait = Duration::from_millis(100);
    for _ in 0..RESENDS {
        match request().await {
            Err(e) if never_sent(&e) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    request().await
}

/// How often a request canceled unsent is sent again (100 ms, then twice as long each time).
const RESENDS: usize = 5;

/// Whether `e` is a request hyper canceled before sending it.
fn never_sent(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The error and its sources, as one line.
pub(super) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(cause) = last.source() {
        last = cause;
    }
    last.to_string()
}

/// Whether the request never reached a server: a refused or timed-out connection, a name that
/// does not resolve.
pub(super) fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<object_store::client::HttpError>() {
            return matches!(
                http.kind(),
                object_store::client::HttpErrorKind::Connect
                    | object_store::client::HttpErrorKind::Timeout
            );
        }
        if let Some(request) = current.downcast_ref::<reqwest::Error>() {
            return request.is_connect() || request.is_timeout();
        }
        cause = current.source();
    }
    false
}
