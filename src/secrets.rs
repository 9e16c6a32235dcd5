//! Secrets never leave the machine in a backup: the config copy has every secret-looking value
//! replaced by a marker (editing only those values in the text, so comments and layout stay),
//! and `restore --with-config` puts the live file's values back in their place.
//!
//! Secret-looking: the value of a key named `api_key`, `apikey`, `*_key`, `*-key`, `*token*`,
//! `*password*`, `*passwd*` or `*secret*` (a string or a number; null, empty and booleans are
//! left alone), and the userinfo (`user:password@`) of any URL.

use serde::{Deserialize, Serialize};
use serde_norway::Value;

/// What replaces a secret in a backup's config copy (a plain YAML scalar, valid in a URL too).
pub const MARKER: &str = "REDACTED-BY-WQM";

/// Whether a key's value is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "apikey"
        || k.ends_with("_key")
        || k.ends_with("-key")
        || ["token", "password", "passwd", "secret"]
            .iter()
            .any(|s| k.contains(s))
}

/// Which part of a config value was redacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The whole value (a secret-looking key).
    Value,
    /// The userinfo of a URL in the value.
    Userinfo,
}

/// One redacted value of the config copy, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// Where: `qdrant.api_key`, `qdrant.nodes[1]`.
    pub key: String,
    pub part: Part,
}

impl std::fmt::Display for Redaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.part {
            Part::Value => write!(f, "`{}`", self.key),
            Part::Userinfo => write!(f, "the URL userinfo of `{}`", self.key),
        }
    }
}

/// A config file with its secrets replaced.
#[derive(Debug)]
pub struct Redacted {
    pub text: String,
    pub redactions: Vec<Redaction>,
    /// The layout was beyond in-place editing, so the copy was written out anew (comments lost).
    pub rewritten: bool,
}

/// Replaces every secret of a YAML config text by [`MARKER`]. In place when the text is plain
/// block-style YAML (then only the secret values change); otherwise the parsed file is written
/// out anew. A text that is not YAML is returned with URL userinfo masked only.
pub fn redact_config(text: &str) -> Redacted {
    let Ok(original) = serde_norway::from_str::<Value>(text) else {
        return Redacted {
            text: mask_userinfo(text),
            redactions: Vec::new(),
            rewritten: false,
        };
    };
    let mut expected = original;
    let mut redactions = Vec::new();
    redact_tree(&mut expected, String::new(), &mut redactions);

    let edited = edit_in_place(text);
    // The edit is trusted only when it parses to exactly the redacted tree.
    if serde_norway::from_str::<Value>(&edited).ok().as_ref() == Some(&expected) {
        return Redacted {
            text: edited,
            redactions,
            rewritten: false,
        };
    }
    Redacted {
        text: serde_norway::to_string(&expected).unwrap_or_default(),
        redactions,
        rewritten: true,
    }
}

fn redact_tree(value: &mut Value, path: String, out: &mut Vec<Redaction>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = key_text(k);
                let child = join(&path, &key);
                if is_secret_key(&key) && is_secret_scalar(v) {
                    *v = Value::String(MARKER.to_string());
                    out.push(Redaction {
                        key: child,
                        part: Part::Value,
                    });
                } else {
                    redact_tree(v, child, out);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                redact_tree(v, format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => {
            let masked = mask_userinfo(s);
            if masked != *s {
                *s = masked;
                out.push(Redaction {
                    key: path,
                    part: Part::Userinfo,
                });
            }
        }
        Value::Tagged(tagged) => redact_tree(&mut tagged.value, path, out),
        _ => {}
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_secret_scalar(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.is_empty() && s != MARKER,
        Value::Number(_) => true,
        _ => false,
    }
}

/// `scheme://user:password@host…` → `scheme://REDACTED-BY-WQM@host…`, everywhere in `text`.
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_ok = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let after = &rest[at + 3..];
        let authority_end = after
            .find(|c: char| "/?#\"'<>`\\".contains(c) || c.is_whitespace())
            .unwrap_or(after.len());
        out.push_str(&rest[..at + 3]);
        match after[..authority_end].rfind('@') {
            Some(userinfo_end) if scheme_ok && &after[..userinfo_end] != MARKER => {
                out.push_str(MARKER);
                rest = &after[userinfo_end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// A scalar `key: value` or `- value` of block-style YAML: its path and the byte range of the
/// value (quotes included, comment excluded).
struct Entry {
    path: String,
    key: Option<String>,
    start: usize,
    end: usize,
}

enum Level {
    Key(usize, String),
    Item(usize, usize),
}

fn level_indent(level: &Level) -> usize {
    match level {
        Level::Key(i, _) | Level::Item(i, _) => *i,
    }
}

fn path_of(stack: &[Level]) -> String {
    let mut path = String::new();
    for level in stack {
        match level {
            Level::Key(_, k) => path = join(&path, k),
            Level::Item(_, i) => path = format!("{path}[{i}]"),
        }
    }
    path
}

/// Every scalar entry of block-style YAML, with comment lines reported as `None` keys so their
/// text can be scrubbed too. Flow collections, block scalars and the like are skipped (the
/// caller checks the result against the parsed file).
fn scan(text: &str) -> (Vec<Entry>, Vec<(usize, usize)>) {
    let mut scanner = Scanner::default();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        scanner.line(line, offset);
        offset += line.len();
    }
    (scanner.entries, scanner.comments)
}

/// What `scan` found so far and where it is in the tree, carried from line to line.
#[derive(Default)]
struct Scanner {
    entries: Vec<Entry>,
    comments: Vec<(usize, usize)>,
    /// The keys and sequence items that enclose the current line.
    stack: Vec<Level>,
    /// Inside a `|` or `>` block scalar whose key sits at this indent: its lines are skipped.
    block_scalar_indent: Option<usize>,
}

impl Scanner {
    /// One line, which starts at byte `start` of the text.
    fn line(&mut self, line: &str, start: usize) {
        let body = line.trim_end_matches(['\n', '\r']);
        let line_end = start + body.len();
        let indent = body.len() - body.trim_start_matches(' ').len();
        let content = &body[indent..];
        if let Some(block) = self.block_scalar_indent {
            if content.is_empty() || indent > block {
                return;
            }
            self.block_scalar_indent = None;
        }
        if content.is_empty() || content == "---" || content == "..." {
            return;
        }
        if content.starts_with('#') {
            self.comments.push((start + indent, line_end));
            return;
        }
        let (column, content) = self.enter_items(indent, content);
        if content.is_empty() {
            return;
        }
        // `content` is what is left at the end of the line.
        let content_at = line_end - content.len();
        match split_key(content) {
            Some((key, value_offset)) => self.key_value(
                column,
                key,
                &content[value_offset..],
                content_at + value_offset,
                line_end,
            ),
            None => self.item_value(content, content_at, line_end),
        }
    }

    /// Steps over the `- ` items that begin a line, possibly several (`- - a`): returns the
    /// column and the content after them.
    fn enter_items<'a>(&mut self, indent: usize, content: &'a str) -> (usize, &'a str) {
        let mut column = indent;
        let mut content = content;
        while content == "-" || content.starts_with("- ") {
            while self.stack.last().is_some_and(|l| {
                level_indent(l) > column || matches!(l, Level::Key(i, _) if *i == column)
            }) {
                self.stack.pop();
            }
            let index = match self.stack.last() {
                Some(Level::Item(i, n)) if *i == column => {
                    let next = n + 1;
                    self.stack.pop();
                    next
                }
                _ => 0,
            };
            self.stack.push(Level::Item(column, index));
            let after = content[1..].trim_start_matches(' ');
            column += content.len() - after.len();
            content = after;
            if content.is_empty() {
                break;
            }
        }
        (column, content)
    }

    /// `key: value` at `column`, the value starting at byte `value_at`: a scalar entry, or the
    /// start of a nested block (or a block scalar, skipped).
    fn key_value(
        &mut self,
        column: usize,
        key: String,
        value: &str,
        value_at: usize,
        line_end: usize,
    ) {
        while self.stack.last().is_some_and(|l| level_indent(l) >= column) {
            self.stack.pop();
        }
        let trimmed = value.trim_start_matches(' ');
        let at = value_at + (value.len() - trimmed.len());
        if trimmed.is_empty() || trimmed.starts_with('#') {
            self.stack.push(Level::Key(column, key));
            if trimmed.starts_with('#') {
                self.comments.push((at, line_end));
            }
            return;
        }
        if trimmed.starts_with(['|', '>']) {
            self.block_scalar_indent = Some(column);
            return;
        }
        if let Some(len) = scalar_len(trimmed) {
            self.entries.push(Entry {
                path: join(&path_of(&self.stack), &key),
                key: Some(key),
                start: at,
                end: at + len,
            });
            push_comment(&mut self.comments, trimmed, len, at, line_end);
        }
    }

    /// A scalar sequence item starting at byte `at`.
    fn item_value(&mut self, content: &str, at: usize, line_end: usize) {
        if let (Some(len), Some(Level::Item(..))) = (scalar_len(content), self.stack.last()) {
            self.entries.push(Entry {
                path: path_of(&self.stack),
                key: None,
                start: at,
                end: at + len,
            });
            push_comment(&mut self.comments, content, len, at, line_end);
        }
    }
}

fn push_comment(
    comments: &mut Vec<(usize, usize)>,
    value: &str,
    len: usize,
    at: usize,
    line_end: usize,
) {
    if let Some(hash) = value[len..].find('#') {
        comments.push((at + len + hash, line_end));
    }
}

/// `key: …` → (the key, where the value starts). Plain or quoted keys only.
fn split_key(content: &str) -> Option<(String, usize)> {
    let (key, after) = if let Some(quote @ ('"' | '\'')) = content.chars().next() {
        let len = quoted_len(content, quote)?;
        let inner = serde_norway::from_str::<String>(&content[..len]).ok()?;
        (inner, len)
    } else {
        let colon = content
            .match_indices(':')
            .map(|(i, _)| i)
            .find(|&i| matches!(content[i + 1..].chars().next(), None | Some(' ')))?;
        let key = &content[..colon];
        if key.is_empty() || key.contains(['#', '{', '[', '&', '*', '!', '|', '>']) {
            return None;
        }
        (key.trim_end().to_string(), colon)
    };
    let rest = &content[after..];
    let rest = rest.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, after + 1))
}

/// The length of a scalar at the start of `value` (before any comment), or `None` for what is
/// not a plain or quoted scalar (flow collections, anchors, tags, block scalars).
fn scalar_len(value: &str) -> Option<usize> {
    match value.chars().next()? {
        q @ ('"' | '\'') => quoted_len(value, q),
        '[' | '{' | '&' | '*' | '!' | '|' | '>' | '%' | '@' | '`' => None,
        _ => {
            let end = value.find(" #").unwrap_or(value.len());
            Some(value[..end].trim_end().len())
        }
    }
}

fn quoted_len(value: &str, quote: char) -> Option<usize> {
    let bytes = value.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if quote == '"' && c == '\\' {
            i += 2;
            continue;
        }
        if c == quote {
            if quote == '\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The scalar a YAML value text stands for, as the parser reads it.
fn scalar_value(raw: &str) -> Option<Value> {
    serde_norway::from_str::<Value>(raw).ok()
}

/// Edits only the secret values of `text` (and secrets in comments).
fn edit_in_place(text: &str) -> String {
    let (entries, comments) = scan(text);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for entry in &entries {
        let raw = &text[entry.start..entry.end];
        let secret_key = entry.key.as_deref().is_some_and(is_secret_key);
        if secret_key && scalar_value(raw).as_ref().is_some_and(is_secret_scalar) {
            edits.push((entry.start, entry.end, MARKER.to_string()));
        } else {
            let masked = mask_userinfo(raw);
            if masked != raw {
                edits.push((entry.start, entry.end, masked));
            }
        }
    }
    for &(start, end) in &comments {
        let comment = &text[start..end];
        let mut scrubbed = mask_userinfo(comment);
        // A commented-out secret (`# api_key: abc`) is a secret too.
        let inner = scrubbed.trim_start_matches('#').trim_start();
        if let Some((key, at)) = split_key(inner) {
            let looks_like_a_key = !key.contains(char::is_whitespace);
            if looks_like_a_key && is_secret_key(&key) && !inner[at..].trim().is_empty() {
                let head = scrubbed.len() - inner.len() + at;
                scrubbed = format!("{} {MARKER}", &scrubbed[..head]);
            }
        }
        if scrubbed != comment {
            edits.push((start, end, scrubbed));
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// What `restore --with-config` writes: the backup's config text with each redacted value put
/// back from the live config (`live`, when there is one); what the live file has no value for
/// is written as `null` (a URL without userinfo): see [`missing_in_live`].
pub fn restore_config(backup: &str, redactions: &[Redaction], live: Option<&str>) -> String {
    let fills = live_fills(redactions, live);
    let Ok(mut expected) = serde_norway::from_str::<Value>(backup) else {
        return backup.to_string();
    };
    for (redaction, fill) in &fills {
        if let Some(slot) = lookup_mut(&mut expected, &redaction.key) {
            *slot = apply(slot, redaction.part, fill.as_ref());
        }
    }
    // In place first: only the marked values change.
    let (entries, _) = scan(backup);
    let mut edits = Vec::new();
    for entry in &entries {
        if let Some((redaction, fill)) = fills.iter().find(|(r, _)| r.key == entry.path) {
            let raw = &backup[entry.start..entry.end];
            let Some(current) = scalar_value(raw) else {
                continue;
            };
            let new = apply(&current, redaction.part, fill.as_ref());
            edits.push((entry.start, entry.end, yaml_scalar(&new)));
        }
    }
    let mut out = String::with_capacity(backup.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        out.push_str(&backup[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&backup[at..]);
    if serde_norway::from_str::<Value>(&out).ok().as_ref() == Some(&expected) {
        return out;
    }
    serde_norway::to_string(&expected).unwrap_or(out)
}

/// The redactions the live config has no value for (restored as null or without userinfo).
pub fn missing_in_live(redactions: &[Redaction], live: Option<&str>) -> Vec<Redaction> {
    live_fills(redactions, live)
        .into_iter()
        .filter(|(_, fill)| fill.is_none())
        .map(|(r, _)| r.clone())
        .collect()
}

/// Each redaction with the live config's value for it (for userinfo: the live URL's userinfo).
fn live_fills<'a>(
    redactions: &'a [Redaction],
    live: Option<&str>,
) -> Vec<(&'a Redaction, Option<Value>)> {
    let live_tree = live.and_then(|t| serde_norway::from_str::<Value>(t).ok());
    redactions
        .iter()
        .map(|redaction| {
            let live_value = live_tree.as_ref().and_then(|t| lookup(t, &redaction.key));
            let fill = match redaction.part {
                Part::Value => live_value.filter(|v| !v.is_null()).cloned(),
                Part::Userinfo => live_value
                    .and_then(Value::as_str)
                    .and_then(userinfo)
                    .map(|u| Value::String(u.to_string())),
            };
            (redaction, fill)
        })
        .collect()
}

/// The value a redacted slot gets back: the live value, or null / the URL without userinfo.
fn apply(current: &Value, part: Part, fill: Option<&Value>) -> Value {
    match part {
        Part::Value => fill.cloned().unwrap_or(Value::Null),
        Part::Userinfo => {
            let text = current.as_str().unwrap_or_default();
            let marked = format!("{MARKER}@");
            Value::String(match fill.and_then(Value::as_str) {
                Some(userinfo) => text.replacen(&marked, &format!("{userinfo}@"), 1),
                None => text.replacen(&marked, "", 1),
            })
        }
    }
}

/// A scalar as YAML text: JSON strings are valid double-quoted YAML scalars.
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

/// The userinfo of the first URL in `text`.
fn userinfo(text: &str) -> Option<&str> {
    let at = text.find("://")?;
    let after = &text[at + 3..];
    let authority_end = after
        .find(|c: char| "/?#".contains(c) || c.is_whitespace())
        .unwrap_or(after.len());
    let end = after[..authority_end].rfind('@')?;
    Some(&after[..end]).filter(|u| *u != MARKER)
}

/// Path segments of `a.b[2].c`.
fn segments(path: &str) -> Vec<Result<String, usize>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Ok(name.to_string()));
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            if let Ok(n) = index.trim_end_matches(']').parse() {
                out.push(Err(n));
            }
        }
    }
    out
}

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = tree;
    for segment in segments(path) {
        at = match segment {
            Ok(key) => at.as_mapping()?.get(Value::String(key))?,
            Err(i) => at.as_sequence()?.get(i)?,
        };
    }
    Some(at)
}

fn lookup_mut<'a>(tree: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut at = tree;
    for segment in segments(path) {
        at = match segment {
            Ok(key) => at.as_mapping_mut()?.get_mut(Value::String(key))?,
            Err(i) => at.as_sequence_mut()?.get_mut(i)?,
        };
    }
    Some(at)
}

/// Replaces secret-looking values in a JSON object (the manifest's `custom_metadata`).
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let secret = match v {
                    serde_json::Value::String(s) => !s.is_empty(),
                    serde_json::Value::Number(_) => true,
                    _ => false,
                };
                if is_secret_key(k) && secret {
                    *v = serde_json::Value::String(MARKER.to_string());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::String(s) => *s = mask_userinfo(s),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# workspace-qdrant config
# api_key: old-commented-key
qdrant:
  url: \"https://admin:hunter2@qdrant.example:6333\"   # the server
  api_key: s3cr3t-key # rotated monthly
  timeout: 30s
  nodes:
    - http://n1:6333
    - http://user:pw@n2:6333
grpc:
  host: 127.0.0.1
  port: 50051
embedding:
  provider_token: 'abc''def'
  use_token: true
  cache_key: null
  keys:
    - name: a
      access_key: 12345
backup:
  compression: true
";

    #[test]
    fn secrets_are_replaced_in_place_and_everything_else_is_kept() {
        let r = redact_config(CONFIG);
        assert!(!r.rewritten);
        let expected = CONFIG
            .replace("# api_key: old-commented-key", "# api_key: REDACTED-BY-WQM")
            .replace("admin:hunter2@", "REDACTED-BY-WQM@")
            .replace("s3cr3t-key", "REDACTED-BY-WQM")
            .replace("user:pw@", "REDACTED-BY-WQM@")
            .replace("'abc''def'", "REDACTED-BY-WQM")
            .replace("access_key: 12345", "access_key: REDACTED-BY-WQM");
        assert_eq!(r.text, expected);
        let keys: Vec<String> = r.redactions.iter().map(ToString::to_string).collect();
        assert_eq!(
            keys,
            [
                "the URL userinfo of `qdrant.url`",
                "`qdrant.api_key`",
                "the URL userinfo of `qdrant.nodes[1]`",
                "`embedding.provider_token`",
                "`embedding.keys[0].access_key`",
            ]
        );
        for secret in ["hunter2", "s3cr3t", "pw@", "abc", "12345", "old-commented"] {
            assert!(!r.text.contains(secret), "{secret}");
        }
    }

    #[test]
    fn a_file_without_secrets_is_kept_byte_for_byte() {
        for text in [
            include_str!("../config.example.yaml"),
            "# The token: see the docs\nqdrant:\n  url: http://localhost:6333\n",
        ] {
            let r = redact_config(text);
            assert_eq!(r.text, text);
            assert!(r.redactions.is_empty() && !r.rewritten);
        }
    }

    #[test]
    fn a_layout_beyond_in_place_editing_is_written_out_anew() {
        let text =
            "qdrant: {url: http://localhost:6333, api_key: flow-secret}\nother: |\n  api_key: x\n";
        let r = redact_config(text);
        assert!(r.rewritten);
        assert!(!r.text.contains("flow-secret"));
        let tree: Value = serde_norway::from_str(&r.text).unwrap();
        assert_eq!(tree["qdrant"]["api_key"], MARKER);
        assert_eq!(tree["qdrant"]["url"], "http://localhost:6333");
    }

    #[test]
    fn restore_puts_the_live_values_back_and_reports_what_the_live_file_lacks() {
        let r = redact_config(CONFIG);
        let live = "qdrant:\n  url: http://live:pass@elsewhere:6333\n  api_key: live-key\n  nodes: [\"http://a\", \"http://b\"]\n";
        let text = restore_config(&r.text, &r.redactions, Some(live));
        let missing = missing_in_live(&r.redactions, Some(live));
        let expected = CONFIG
            .replace("# api_key: old-commented-key", "# api_key: REDACTED-BY-WQM")
            .replace("admin:hunter2@", "live:pass@")
            .replace("s3cr3t-key", "\"live-key\"")
            .replace("http://user:pw@n2:6333", "\"http://n2:6333\"")
            .replace("'abc''def'", "null")
            .replace("access_key: 12345", "access_key: null");
        assert_eq!(text, expected);
        let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
        assert_eq!(
            missing,
            [
                "the URL userinfo of `qdrant.nodes[1]`",
                "`embedding.provider_token`",
                "`embedding.keys[0].access_key`"
            ]
        );
        assert_eq!(missing_in_live(&r.redactions, None).len(), 5);
    }

    #[test]
    fn userinfo_is_masked_in_any_text() {
        assert_eq!(
            mask_userinfo("failed at http://u:p@h:1/x and https://tok@h2 but not a@b or mailto:x@y"),
            "failed at http://REDACTED-BY-WQM@h:1/x and https://REDACTED-BY-WQM@h2 but not a@b or mailto:x@y"
        );
        assert_eq!(mask_userinfo("http://h:6333/a@b"), "http://h:6333/a@b");
        let mut json = serde_json::json!({"environment": "prod", "deploy_token": "t", "hook": "https://x:y@h", "list": [{"password": 1}]});
        redact_json(&mut json);
        assert_eq!(
            json,
            serde_json::json!({"environment": "prod", "deploy_token": MARKER, "hook": "https://REDACTED-BY-WQM@h", "list": [{"password": MARKER}]})
        );
    }

    #[test]
    fn secret_key_names() {
        for k in [
            "api_key",
            "API_KEY",
            "apikey",
            "ssh-key",
            "access_token",
            "tokens",
            "db_password",
            "passwd",
            "client_secret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["url", "keys", "key_count", "timeout", "monkey"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
