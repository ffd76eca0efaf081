//! The server side of SASL OAUTHBEARER (RFC 7628) as Kafka's `OAuthBearerSaslServer` has
//! it: the client's one message carries a GS2 header and `auth=Bearer <token>` (and optional
//! extensions); a token that does not validate is answered with an error challenge, which the
//! client acknowledges with `%x01` before the authentication fails.

/// The largest token accepted. Tokens with many groups or roles run to a few KiB; frames
/// before authentication are already bounded by `UNAUTHENTICATED_FRAME_BYTES_MAX`.
pub const TOKEN_BYTES_MAX: usize = 64 * 1024;

/// The error challenge for a token that does not validate: Kafka's JSON for the validator's
/// `invalid_token` status (RFC 7628 section 3.2.2), without `scope` or `openid-configuration`.
pub const INVALID_TOKEN_CHALLENGE: &str = r#"{"status":"invalid_token"}"#;

/// The client's answer to an error challenge (RFC 7628 section 3.2.3).
pub const ERROR_ACKNOWLEDGEMENT: &[u8] = &[KV_SEPARATOR];

/// RFC 7628's separator of key-value pairs, `%x01`.
const KV_SEPARATOR: u8 = 0x01;

/// The client's initial response.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientInitialResponse<'a> {
    /// The authorization id of the GS2 header (`a=`, unescaped); empty if none.
    pub authorization_id: String,
    /// The bearer token.
    pub token: &'a str,
}

/// Parses the client's initial response, `n,[a=AUTHZID],%x01(KEY=VALUE%x01)*%x01`, as
/// Kafka's `OAuthBearerClientInitialResponse` does: `auth` must be there with the `Bearer`
/// scheme; other keys are extensions, whose names and values must be well-formed (the
/// broker's validator, like Kafka's, uses none of them).
pub fn parse_client_initial_response(
    message: &[u8],
) -> Result<ClientInitialResponse<'_>, &'static str> {
    let rest = message
        .strip_prefix(b"n,")
        .ok_or("not a GS2 header without channel binding (n,)")?;
    let comma = rest
        .iter()
        .position(|b| *b == b',')
        .ok_or("GS2 header without its second comma")?;
    let (authzid, rest) = (&rest[..comma], &rest[comma + 1..]);
    let authorization_id = match authzid {
        [] => String::new(),
        _ => {
            let name = authzid
                .strip_prefix(b"a=")
                .ok_or("GS2 header's authorization id is not a=")?;
            unescape_saslname(name)?
        }
    };
    // What follows is %x01, the pairs each ending in %x01, and the closing %x01.
    let pairs = rest
        .strip_prefix(&[KV_SEPARATOR])
        .and_then(|r| r.strip_suffix(&[KV_SEPARATOR]))
        .ok_or("key-value pairs not within %x01 separators")?;
    let mut auth = None;
    if !pairs.is_empty() {
        let pairs = pairs
            .strip_suffix(&[KV_SEPARATOR])
            .ok_or("a key-value pair not ended by %x01")?;
        for pair in pairs.split(|b| *b == KV_SEPARATOR) {
            let equals = pair
                .iter()
                .position(|b| *b == b'=')
                .ok_or("a key-value pair without =")?;
            let (key, value) = (&pair[..equals], &pair[equals + 1..]);
            if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
                return Err("a key that is not letters");
            }
            if value.is_empty() || !value.iter().all(|b| is_value_byte(*b)) {
                return Err("a value with a character RFC 7628 does not allow");
            }
            if key == b"auth" {
                if auth.is_some() {
                    return Err("auth twice");
                }
                auth = Some(value);
            }
        }
    }
    let auth = auth.ok_or("no auth")?;
    Ok(ClientInitialResponse {
        authorization_id,
        token: bearer_token(auth)?,
    })
}

/// The token of `auth=<scheme> <token>`: the scheme `Bearer` (any case), one or more spaces,
/// and a `b64token` (RFC 6750).
fn bearer_token(auth: &[u8]) -> Result<&str, &'static str> {
    let space = auth
        .iter()
        .position(|b| *b == b' ')
        .ok_or("auth without a scheme")?;
    if !auth[..space].eq_ignore_ascii_case(b"bearer") {
        return Err("auth's scheme is not Bearer");
    }
    let token = auth[space..].trim_ascii_start();
    if token.len() > TOKEN_BYTES_MAX {
        return Err("a token longer than TOKEN_BYTES_MAX");
    }
    let body = token.trim_ascii_end();
    let body_end = body
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(0, |last| last + 1);
    let b64token = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(b);
    if body_end == 0 || body.len() != token.len() || !body[..body_end].iter().all(b64token) {
        return Err("a token with a character b64token does not allow");
    }
    // Only ASCII bytes passed the check above.
    std::str::from_utf8(token).map_err(|_| "a token that is not ASCII")
}

/// RFC 7628's `value`: printable ASCII, space, tab, CR and LF.
fn is_value_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 5801's `saslname`: ASCII but `,` and `=`, which come as `=2C` and `=3D`.
fn unescape_saslname(name: &[u8]) -> Result<String, &'static str> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'=' if tail.starts_with(b"2C") => out.push(','),
            b'=' if tail.starts_with(b"3D") => out.push('='),
            0x01..=0x7f if b != b'=' && b != b',' => {
                out.push(char::from(b));
                rest = tail;
                continue;
            }
            _ => return Err("a malformed authorization id"),
        }
        rest = &tail[2..];
    }
    if out.is_empty() {
        return Err("an empty authorization id");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(message: &[u8]) -> Result<(String, &str), &'static str> {
        parse_client_initial_response(message).map(|r| (r.authorization_id, r.token))
    }

    #[test]
    fn initial_responses_parse_as_kafka_parses_them() {
        // What Kafka's client (OAuthBearerClientInitialResponse.toBytes) and librdkafka send.
        assert_eq!(
            parsed(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01"),
            Ok((String::new(), "abc.def.ghi"))
        );
        assert_eq!(
            parsed(b"n,a=al=2Cice=3D,\x01auth=bearer  a-b_c~d+e/f==\x01ext=v 1\x01\x01"),
            Ok(("al,ice=".to_string(), "a-b_c~d+e/f=="))
        );
        assert_eq!(
            parsed(b"n,,\x01traceId=x\x01auth=BEARER t\x01\x01"),
            Ok((String::new(), "t"))
        );
    }

    #[test]
    fn malformed_initial_responses_are_refused() {
        let long = format!(
            "n,,\x01auth=Bearer {}\x01\x01",
            "a".repeat(TOKEN_BYTES_MAX + 1)
        );
        for message in [
            &b""[..],
            b"\x01",
            b"y,,\x01auth=Bearer t\x01\x01",
            b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
            b"n,\x01auth=Bearer t\x01\x01",
            b"n,b=x,\x01auth=Bearer t\x01\x01",
            b"n,a=,\x01auth=Bearer t\x01\x01",
            b"n,a=x=2,\x01auth=Bearer t\x01\x01",
            b"n,,\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,auth=Bearer t\x01\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01auth=Bearer\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01auth=Bearer t t\x01\x01",
            b"n,,\x01auth=Bearer t=x\x01\x01",
            b"n,,\x01auth=Bearer ==\x01\x01",
            b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
            b"n,,\x01auth=Bearer t\x01k1=v\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=\x00\x01\x01",
            b"n,,\x01auth=Bearer t\x01novalue\x01\x01",
            b"n,,\x01ext=v\x01\x01",
            long.as_bytes(),
        ] {
            assert!(
                parsed(message).is_err(),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }
}
