//! What can go wrong talking to Qdrant, with exit codes and hints, and Qdrant's error bodies.

use std::path::PathBuf;

use serde_json::Value;

use crate::exit::{Classify, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum QdrantError {
    #[error("Failed to connect to Qdrant at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("Qdrant at {url} rejected the request (401): {message}")]
    Unauthorized { url: String, message: String },
    #[error("Qdrant refused the request (403 Forbidden): {message}")]
    Forbidden { message: String },
    #[error("Not found on Qdrant: {message}")]
    NotFound { message: String },
    #[error("Qdrant failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("Qdrant answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Qdrant did not answer within {seconds} s ({what})")]
    Timeout { what: String, seconds: u64 },
    #[error("unexpected answer from Qdrant ({what}): {reason}")]
    Protocol { what: String, reason: String },
    #[error("the connection to Qdrant broke ({what}): {reason}")]
    Dropped { what: String, reason: String },
    #[error("the download of `{name}` failed after {attempts} attempts: {reason}")]
    Transfer {
        name: String,
        attempts: u32,
        reason: String,
    },
    #[error("the downloaded snapshot `{name}` does not match Qdrant's checksum (expected sha256 {expected}, got {actual})")]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read the CA certificate file `{}`: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    #[error("invalid Qdrant URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the API key cannot be sent: it is not a valid HTTP header value")]
    BadApiKey,
}

impl QdrantError {
    /// Whether Qdrant itself answered with this error (so it did not do what was asked), as
    /// opposed to a connection or a wait that ended without an answer.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            QdrantError::Unauthorized { .. }
                | QdrantError::Forbidden { .. }
                | QdrantError::NotFound { .. }
                | QdrantError::Server { .. }
                | QdrantError::Status { .. }
        )
    }
}

impl QdrantError {
    /// Qdrant refused an upload whose content's sha256 is not the `?checksum=` it was sent
    /// (400 "Checksum mismatch: …"). It compares before it unpacks: nothing changed.
    pub fn is_checksum_refusal(&self) -> bool {
        matches!(self, QdrantError::Status { status: 400, message }
            if message.starts_with("Checksum mismatch"))
    }
}

impl Classify for QdrantError {
    fn exit_code(&self) -> ExitCode {
        match self {
            QdrantError::CaCert { .. } | QdrantError::BadUrl { .. } | QdrantError::BadApiKey => {
                ExitCode::Usage
            }
            _ => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            QdrantError::Connect { .. } => "start Qdrant, or point wqm at it with QDRANT_URL (or --qdrant-url, or `qdrant.url` in the config)".to_string(),
            QdrantError::Unauthorized { .. } => "set QDRANT_API_KEY (or `qdrant.api_key`) to an API key of this Qdrant server".to_string(),
            QdrantError::Forbidden { .. } => "the API key lacks rights: creating and deleting snapshots needs write access, restoring needs a manage (full) key; a read-only key is not enough".to_string(),
            QdrantError::Timeout { .. } => "Qdrant may be overloaded; raise `backup.transfer.read_timeout` or `backup.transfer.operation_timeout` if it is just slow".to_string(),
            QdrantError::Transfer { .. } | QdrantError::ChecksumMismatch { .. } => "check the network and Qdrant's logs, then run the command again; nothing partial was kept on disk".to_string(),
            QdrantError::Server { status: 503, .. } | QdrantError::Status { status: 429, .. } => "Qdrant said \"not now\" (429: its rate limit; 503: a shard not ready, or a proxy without its Qdrant) to every attempt for `backup.transfer.retry_timeout`; run the command again later, or raise `backup.transfer.retry_timeout`".to_string(),
            QdrantError::Server { .. } => "see Qdrant's log; free disk space on the server if it is full".to_string(),
            QdrantError::BadApiKey => "check QDRANT_API_KEY (or `qdrant.api_key`): a stray newline or a character outside visible ASCII is the usual cause".to_string(),
            QdrantError::Dropped { .. } => "Qdrant stopped, restarted or dropped the connection (calls that change nothing are retried for `backup.transfer.retry_timeout`, an upload is not); see Qdrant's log, then run the command again".to_string(),
            _ => return None,
        })
    }
}

/// Qdrant's error bodies: JSON `{"status":{"error":"…"}}`, or plain text from the auth layer.
pub fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.get("status")
            .and_then(|s| s.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    }
}

/// An error and its sources on one line (reqwest's own message alone says little).
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_error_body_shapes() {
        assert_eq!(
            error_message(
                r#"{"status":{"error":"Not found: Collection `nope` doesn't exist!"},"time":0.1}"#
            ),
            "Not found: Collection `nope` doesn't exist!"
        );
        assert_eq!(
            error_message("Must provide an API key or an Authorization bearer token"),
            "Must provide an API key or an Authorization bearer token"
        );
        assert_eq!(error_message(""), "(no message)");
    }
}
