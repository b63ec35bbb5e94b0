//! A PostgreSQL store that cannot be used stops `warren serve` at once: a malformed URL, a
//! wrong password, an unknown database, a port nothing listens on, a host out of reach, a
//! server that never answers.
//! Each exits non-zero within a bound, with a message that names the host, port and database,
//! and never prints the password (a URL it shows has `***` in its place).
//!
//! These are about PostgreSQL and run whatever `WARREN_TEST_STORE` says. The server of
//! `WARREN_TEST_PG_URL` (cases with a wrong password or database) must be up.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, QueueCleanup, unique};

/// A password no message may contain.
const PASSWORD: &str = "pw-4be1c9d07a2f";
/// The wrong password of the wrong-password case.
const WRONG_PASSWORD: &str = "wrong-pass-123";

/// The host, port and database of `WARREN_TEST_PG_URL`, and its URL.
fn server() -> (reqwest::Url, String, u16, String) {
    let url = reqwest::Url::parse(&common::store::pg_admin_url()).expect("WARREN_TEST_PG_URL");
    let host = url.host_str().expect("a host").to_owned();
    let port = url.port().unwrap_or(5432);
    let db = url.path().trim_start_matches('/').to_owned();
    (url, host, port, db)
}

/// What one `warren serve` printed and how it ended.
struct Ended {
    code: Option<i32>,
    took: Duration,
    output: String,
}

/// Runs `warren serve` on `store_url` in `dir` until it exits, killing it after `hard_stop`.
fn serve(dir: &Path, store_url: &str, hard_stop: Duration) -> Ended {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("serve")
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_BIND", "127.0.0.1:0")
        .env("WARREN_STORE_URL", store_url)
        .env("RUST_LOG", "debug")
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_API_TOKENS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren serve");
    let _guard = KillOnDrop {
        pid: child.id(),
        group: false,
    };
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for warren") {
            break Some(status);
        }
        if started.elapsed() > hard_stop {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let output = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    Ended {
        code: status.and_then(|s| s.code()),
        took,
        output,
    }
}

/// Starts `warren serve` on `url` and checks that it fails within `bound`, naming every one
/// of `names` and never printing `password`.
fn fails_at_start(what: &str, url: &str, password: &str, names: &[&str], bound: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("pgstart");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\n"),
    )
    .expect("config");
    let ended = serve(dir.path(), url, bound + Duration::from_secs(15));
    let out = &ended.output;
    eprintln!(
        "{what}: exit {:?} after {} ms:\n{out}",
        ended.code,
        ended.took.as_millis()
    );
    assert!(
        ended.code.is_some(),
        "{what}: warren serve was still running after {:?}:\n{out}",
        ended.took
    );
    assert_ne!(ended.code, Some(0), "{what}: start-up must fail:\n{out}");
    assert!(
        ended.took <= bound,
        "{what}: start-up took {:?} to fail (bound {bound:?}):\n{out}",
        ended.took
    );
    assert!(
        out.contains("store"),
        "{what}: the message says it is the store:\n{out}"
    );
    for name in names {
        assert!(
            out.contains(name),
            "{what}: the message names {name}:\n{out}"
        );
    }
    assert!(
        !out.contains(password),
        "{what}: the password `{password}` was printed:\n{out}"
    );
    // Where the URL is shown, its password is `***`.
    for (at, _) in out.match_indices("postgres://") {
        let rest = &out[at + "postgres://".len()..];
        let authority = rest.split(['/', ' ', '`', '"']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            assert!(
                userinfo.split_once(':').is_none_or(|(_, pw)| pw == "***"),
                "{what}: a URL with its password: {authority}:\n{out}"
            );
        }
    }
}

#[test]
fn a_malformed_store_url_stops_start_up_naming_it_without_the_password() {
    let (_, host, _, db) = server();
    let url = format!("postgres://warren:{PASSWORD}@{host}:54x2/{db}");
    fails_at_start(
        "malformed URL",
        &url,
        PASSWORD,
        &[&host, &db, "warren:***@"],
        Duration::from_secs(10),
    );
}

#[test]
fn a_wrong_password_stops_start_up_naming_the_server_and_database() {
    let (mut url, host, port, db) = server();
    url.set_password(Some(WRONG_PASSWORD))
        .expect("a URL with a password");
    let takes_any_password = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use sqlx::Connection as _;
            match sqlx::PgConnection::connect(url.as_str()).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    true
                }
                Err(_) => false,
            }
        });
    if !takes_any_password {
        fails_at_start(
            "wrong password",
            url.as_str(),
            WRONG_PASSWORD,
            &[&format!("{host}:{port}/{db}")],
            Duration::from_secs(10),
        );
        return;
    }
    // This server trusts the address (pg_hba `trust`) and takes any password. A scripted
    // server answers instead, as PostgreSQL does when it checks the password: it asks for
    // the password and refuses it (SQLSTATE 28P01).
    eprintln!(
        "note: {host}:{port} takes any password from here (pg_hba `trust`); a scripted server refuses it instead"
    );
    let (fake, sent) = refusing_server();
    let url = format!("postgres://warren:{WRONG_PASSWORD}@127.0.0.1:{fake}/{db}");
    fails_at_start(
        "wrong password (scripted server)",
        &url,
        WRONG_PASSWORD,
        &[
            &format!("127.0.0.1:{fake}/{db}"),
            "password authentication failed",
        ],
        Duration::from_secs(10),
    );
    let sent = sent
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    assert_eq!(
        sent, WRONG_PASSWORD,
        "warren sent the URL's password to the server"
    );
}

/// A server on a free loopback port that speaks PostgreSQL's protocol (v3) far enough to
/// refuse a login: no TLS, a request for the password in clear, then `FATAL 28P01 password
/// authentication failed`. Returns its port, and the passwords it was sent.
fn refusing_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut int = [0u8; 4];
            let mut read_int = |c: &mut std::net::TcpStream| {
                c.read_exact(&mut int)
                    .map(|()| u32::from_be_bytes(int) as usize)
            };
            // SSLRequest or GSSENCRequest (answered `N`: not here), then the StartupMessage.
            let startup = loop {
                let (Ok(len), Ok(code)) = (read_int(&mut conn), read_int(&mut conn)) else {
                    break None;
                };
                if code == 80_877_103 || code == 80_877_104 {
                    let _ = conn.write_all(b"N");
                    continue;
                }
                let mut rest = vec![0u8; len.saturating_sub(8)];
                break conn.read_exact(&mut rest).ok();
            };
            if startup.is_none() {
                continue;
            }
            // AuthenticationCleartextPassword.
            let _ = conn.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
            let mut kind = [0u8; 1];
            if conn.read_exact(&mut kind).is_err() || kind[0] != b'p' {
                continue;
            }
            let Ok(len) = read_int(&mut conn) else {
                continue;
            };
            let mut password = vec![0u8; len.saturating_sub(4)];
            if conn.read_exact(&mut password).is_err() {
                continue;
            }
            let password = String::from_utf8_lossy(&password)
                .trim_end_matches('\0')
                .to_owned();
            let _ = tx.send(password);
            let mut fields = Vec::new();
            for (code, value) in [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28P01"),
                (b'M', "password authentication failed for user \"warren\""),
            ] {
                fields.push(code);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&u32::try_from(fields.len() + 4).unwrap_or(0).to_be_bytes());
            msg.extend_from_slice(&fields);
            let _ = conn.write_all(&msg);
        }
    });
    (port, rx)
}

#[test]
fn an_unknown_database_stops_start_up_naming_it() {
    let (mut url, host, port, _) = server();
    let db = format!("warren_missing_{}", &unique("db")[5..]).replace('-', "_");
    url.set_path(&format!("/{db}"));
    // The server's own password is right here; check at least that no URL shows it.
    let password = url.password().unwrap_or_default().to_owned();
    fails_at_start(
        "unknown database",
        url.as_str(),
        &format!(":{password}@"),
        &[&format!("{host}:{port}/{db}")],
        Duration::from_secs(10),
    );
}

#[test]
fn a_closed_port_stops_start_up_naming_the_server() {
    let (_, _, _, db) = server();
    let url = format!("postgres://warren:{PASSWORD}@127.0.0.1:1/{db}");
    fails_at_start(
        "closed port",
        &url,
        PASSWORD,
        &[&format!("127.0.0.1:1/{db}")],
        Duration::from_secs(10),
    );
}

#[test]
fn an_unroutable_host_stops_start_up_within_seconds() {
    // Nothing outside loopback is reachable here: the connection attempt is dropped (and times
    // out), refused, or answered by something that is not PostgreSQL; start-up fails anyway.
    let url = format!("postgres://warren:{PASSWORD}@10.255.255.1:5432/warren_test");
    fails_at_start(
        "no route",
        &url,
        PASSWORD,
        &["10.255.255.1:5432/warren_test"],
        Duration::from_secs(15),
    );
}

#[test]
fn a_server_that_never_answers_stops_start_up_within_seconds() {
    // A port that takes the connection and then says nothing, as a host behind a firewall
    // that drops packets or a hung server: start-up gives up after its connect timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().map_while(Result::ok) {
            held.push(conn);
        }
    });
    let url = format!("postgres://warren:{PASSWORD}@127.0.0.1:{port}/warren_test");
    fails_at_start(
        "silent server",
        &url,
        PASSWORD,
        &[&format!("127.0.0.1:{port}/warren_test")],
        Duration::from_secs(15),
    );
}
