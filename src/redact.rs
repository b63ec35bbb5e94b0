//! Keeps credentials out of logs, errors and health output (DESIGN §9).

/// Replaces the password of every `scheme://user:password@host` URL in `text` with `***`.
///
/// Works on free text (error messages that embed a URL), not only on a bare URL.
/// `amqp://guest:guest@127.0.0.1:5672/%2f` becomes `amqp://guest:***@127.0.0.1:5672/%2f`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; userinfo ends at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '?')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords_in_urls_inside_text() {
        assert_eq!(
            redact("connect to amqp://guest:s3cret@10.0.0.1:5672/%2f failed"),
            "connect to amqp://guest:***@10.0.0.1:5672/%2f failed"
        );
        assert_eq!(
            redact("postgres://u:p@db/x and amqps://a:b@h"),
            "postgres://u:***@db/x and amqps://a:***@h"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        assert_eq!(redact("http://example.com/a@b"), "http://example.com/a@b");
        assert_eq!(redact("sqlite://warren.db"), "sqlite://warren.db");
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
    }
}
