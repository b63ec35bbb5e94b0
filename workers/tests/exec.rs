//! Behaviour of the `exec` handler and the example scripts in `examples/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren_workers::{ExecHandler, Handler, Job, MAX_RESULT_BYTES, Outcome};

const JOB_ID: &str = "0190b7a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b";

fn job(payload: &'static [u8]) -> Job {
    Job {
        id: JOB_ID.to_owned(),
        queue: "reports".to_owned(),
        attempt: 2,
        max_attempts: 5,
        correlation_id: None,
        idempotency_key: None,
        payload: Bytes::from_static(payload),
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A handler running `script` with `/bin/sh -c` (no script file is written,
/// so no "text file busy" races with other tests forking).
fn sh(script: &str, extra_args: &[&str]) -> ExecHandler {
    let mut args = vec!["-c".to_owned(), script.to_owned(), "sh".to_owned()];
    args.extend(extra_args.iter().map(|a| (*a).to_owned()));
    ExecHandler::new(PathBuf::from("/bin/sh"), args, None)
}

fn result_of(outcome: Outcome) -> String {
    match outcome {
        Outcome::Success {
            result: Some(result),
        } => result,
        other => panic!("expected success with a result, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_returns_the_payload() {
    let handler = ExecHandler::new(example("echo.sh"), Vec::new(), None);
    let outcome = handler.handle(&job(br#"{"hello":"world"}"#)).await;
    assert_eq!(outcome, Outcome::success_with(r#"{"hello":"world"}"#));
}

#[tokio::test]
async fn one_trailing_newline_is_trimmed_and_empty_output_is_no_result() {
    let handler = ExecHandler::new(example("echo.sh"), Vec::new(), None);
    let outcome = handler.handle(&job(b"line one\nline two\n\n")).await;
    assert_eq!(outcome, Outcome::success_with("line one\nline two\n"));
    let outcome = handler.handle(&job(b"")).await;
    assert_eq!(outcome, Outcome::Success { result: None });
}

#[tokio::test]
async fn the_program_sees_the_job_in_its_environment() {
    let handler = sh(
        r#"printf '%s|%s|%s|%s|%s|%s' "$WARREN_JOB_ID" "$WARREN_ATTEMPT" "$WARREN_MAX_ATTEMPTS" "$WARREN_QUEUE" "${WARREN_CORRELATION_ID-unset}" "${WARREN_IDEMPOTENCY_KEY-unset}""#,
        &[],
    );
    let outcome = handler.handle(&job(b"{}")).await;
    assert_eq!(
        result_of(outcome),
        format!("{JOB_ID}|2|5|reports|unset|unset")
    );

    let mut with_ids = job(b"{}");
    with_ids.correlation_id = Some("corr-1".to_owned());
    with_ids.idempotency_key = Some("key-1".to_owned());
    let outcome = handler.handle(&with_ids).await;
    assert_eq!(
        result_of(outcome),
        format!("{JOB_ID}|2|5|reports|corr-1|key-1")
    );
}

#[tokio::test]
async fn working_dir_and_args_are_passed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = ExecHandler::new(
        PathBuf::from("/bin/sh"),
        vec![
            "-c".to_owned(),
            r#"printf '%s %s' "$(pwd -P)" "$1""#.to_owned(),
            "sh".to_owned(),
            "an arg with spaces; no shell parsing".to_owned(),
        ],
        Some(dir.path().to_owned()),
    );
    let cwd = dir.path().canonicalize().expect("canonical temp dir");
    let outcome = handler.handle(&job(b"{}")).await;
    assert_eq!(
        result_of(outcome),
        format!("{} an arg with spaces; no shell parsing", cwd.display())
    );
}

#[tokio::test]
async fn exit_65_is_permanent_with_stderr() {
    let handler = sh(
        "cat >/dev/null; echo 'bad input: field \"n\" is missing' >&2; exit 65",
        &[],
    );
    let outcome = handler.handle(&job(b"{}")).await;
    assert_eq!(
        outcome,
        Outcome::permanent("exit status 65: bad input: field \"n\" is missing")
    );
}

#[tokio::test]
async fn exit_1_is_retry_with_stderr() {
    let handler = ExecHandler::new(example("fail.sh"), Vec::new(), None);
    match handler.handle(&job(b"{}")).await {
        Outcome::Retry { error, retry_after } => {
            assert!(
                error.starts_with("exit status 1: fail.sh: simulated failure"),
                "{error}"
            );
            assert!(error.contains("on attempt 2 of 5"), "{error}");
            assert_eq!(retry_after, None);
        }
        other => panic!("expected retry, got {other:?}"),
    }
}

#[tokio::test]
async fn killed_by_signal_is_retry() {
    let handler = sh("kill -KILL $$", &[]);
    assert_eq!(
        handler.handle(&job(b"{}")).await,
        Outcome::retry("killed by signal 9")
    );
}

#[tokio::test]
async fn missing_program_is_retry_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let program = dir.path().join("no-such-handler.sh");
    let handler = ExecHandler::new(program.clone(), Vec::new(), None);
    match handler.handle(&job(b"{}")).await {
        Outcome::Retry { error, .. } => {
            assert!(error.contains(&program.display().to_string()), "{error}");
            assert!(error.starts_with("cannot start program"), "{error}");
        }
        other => panic!("expected retry, got {other:?}"),
    }
}

#[tokio::test]
async fn big_payload_and_outputs_do_not_deadlock_and_are_capped() {
    // 1 MiB in; 1 MiB back on stdout (capped to the result limit).
    static BIG: [u8; 1 << 20] = [b'x'; 1 << 20];
    let handler = ExecHandler::new(example("echo.sh"), Vec::new(), None);
    let result = result_of(handler.handle(&job(&BIG)).await);
    assert!(result.len() <= MAX_RESULT_BYTES);
    assert!(result.ends_with("…[truncated]"), "marker missing");
    assert!(result.starts_with("xxxx"));

    // Lots of stderr, written before the payload is read: only the tail is kept.
    let handler = sh(
        "i=0; while [ $i -lt 10000 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done; \
         cat >/dev/null; echo 'the real reason' >&2; exit 3",
        &[],
    );
    match handler.handle(&job(&BIG)).await {
        Outcome::Retry { error, .. } => {
            assert!(error.starts_with("exit status 3: [truncated]…"), "{error}");
            assert!(
                error.ends_with("noise line 9999\nthe real reason"),
                "{error}"
            );
            assert!(error.len() < 3 * 1024, "{} bytes", error.len());
        }
        other => panic!("expected retry, got {other:?}"),
    }
}

/// The state letter of process `pid` from `/proc/<pid>/stat`, or `None` when
/// it no longer exists.
#[cfg(target_os = "linux")]
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Waits (polling, bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn dropping_the_future_kills_the_child() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let pid_arg = pid_file.to_str().expect("UTF-8 temp path");
    // Publish the pid atomically, then become `sleep` (same pid).
    let handler = sh(
        r#"echo $$ >"$1.tmp" && mv "$1.tmp" "$1" && exec sleep 300"#,
        &[pid_arg],
    );
    let job = job(b"{}");

    // Already a `Pin<Box<_>>`: dropping `run` drops the future itself.
    let mut run = handler.handle(&job);
    let pid_file_ready = eventually("the pid file", || pid_file.exists());
    tokio::select! {
        outcome = &mut run => panic!("the child finished early: {outcome:?}"),
        () = pid_file_ready => {}
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid in the pid file");
    assert!(
        matches!(process_state(pid), Some(s) if s != 'Z'),
        "the child should be running"
    );

    // What warren's queue timeout does: drop the running handler future.
    drop(run);

    // Killed: gone, or a zombie until tokio reaps it.
    eventually("the child to die", || {
        matches!(process_state(pid), None | Some('Z'))
    })
    .await;
}

#[tokio::test]
async fn report_sh_writes_its_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = ExecHandler::new(
        example("report.sh"),
        Vec::new(),
        Some(dir.path().to_owned()),
    );
    let payload: &'static [u8] = b"{\"customer\": \"ACME\", \"items\": [1, 2, 3]}\n";
    let result = result_of(handler.handle(&job(payload)).await);

    let expected_sha = sha256sum(payload);
    let report_rel = format!("out/reports/{JOB_ID}.txt");
    assert_eq!(
        result,
        format!(
            r#"{{"report":"{report_rel}","bytes":{},"sha256":"{expected_sha}"}}"#,
            payload.len()
        )
    );

    let report = std::fs::read_to_string(dir.path().join(&report_rel)).expect("report file");
    assert!(report.contains(&format!("job:     {JOB_ID}\n")), "{report}");
    assert!(report.contains("queue:   reports\n"), "{report}");
    assert!(report.contains("attempt: 2\n"), "{report}");
    assert!(
        report.contains(&format!("bytes:   {}\n", payload.len())),
        "{report}"
    );
    assert!(
        report.contains(&format!("sha256:  {expected_sha}\n")),
        "{report}"
    );
    assert!(
        report.contains(std::str::from_utf8(payload).expect("UTF-8")),
        "{report}"
    );

    // Only the report is left: no temp files.
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("out/reports"))
        .expect("report dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from(format!("{JOB_ID}.txt"))]
    );
}

#[tokio::test]
async fn report_sh_rejects_fail_true_permanently() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handler = ExecHandler::new(
        example("report.sh"),
        Vec::new(),
        Some(dir.path().to_owned()),
    );
    match handler.handle(&job(br#"{"n": 1, "fail" :  true}"#)).await {
        Outcome::Permanent { error } => {
            assert!(error.starts_with("exit status 65: "), "{error}");
            assert!(error.contains("\"fail\": true"), "{error}");
        }
        other => panic!("expected permanent failure, got {other:?}"),
    }
    assert!(
        !dir.path()
            .join(format!("out/reports/{JOB_ID}.txt"))
            .exists()
    );

    // "fail": false is an ordinary job.
    let outcome = handler.handle(&job(br#"{"fail": false}"#)).await;
    assert!(
        matches!(outcome, Outcome::Success { result: Some(_) }),
        "{outcome:?}"
    );
}

/// The hex SHA-256 of `data`, computed by coreutils' `sha256sum`.
fn sha256sum(data: &[u8]) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum from coreutils");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(data)
        .expect("writing to sha256sum");
    let output = child.wait_with_output().expect("sha256sum output");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .expect("hex output")
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_owned()
}
