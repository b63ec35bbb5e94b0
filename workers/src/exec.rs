//! The `exec` handler: run a program with the payload on stdin.

use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::handler::{Handler, HandlerFuture};
use crate::job::Job;
use crate::outcome::{MAX_RESULT_BYTES, Outcome};
use crate::truncate::{head_text, tail_text};

/// Exit code for "the input data was incorrect in some way": `EX_DATAERR`
/// from BSD `sysexits.h`. The exec handler treats it as a permanent failure.
const EX_DATAERR: i32 = 65;

/// How much of the end of stderr goes into an error text (2 KiB).
const STDERR_TAIL_BYTES: usize = 2 * 1024;

/// How much of stdout is kept: the result limit plus room for a trailing
/// `\r\n` that is trimmed off.
const STDOUT_KEEP_BYTES: usize = MAX_RESULT_BYTES + 2;

/// Read buffer size for the child's stdout and stderr.
const READ_CHUNK: usize = 16 * 1024;

/// Runs a job by running a program (DESIGN.md §6).
///
/// The program is started directly (no shell) with the handler's arguments,
/// in the handler's working directory, and with the environment of warren
/// plus:
///
/// - `WARREN_JOB_ID`: [`Job::id`];
/// - `WARREN_ATTEMPT`, `WARREN_MAX_ATTEMPTS`: [`Job::attempt`] (1-based) and
///   [`Job::max_attempts`], in decimal;
/// - `WARREN_QUEUE`: [`Job::queue`];
/// - `WARREN_CORRELATION_ID`, `WARREN_IDEMPOTENCY_KEY`: when set on the job
///   (otherwise removed from the child's environment).
///
/// The payload is written to the child's stdin, which is then closed; stdout
/// and stderr are read at the same time, so big payloads and outputs do not
/// deadlock. At most [`MAX_RESULT_BYTES`] of stdout and the last 2 KiB of
/// stderr are kept; the rest is read and dropped.
///
/// The exit status maps to an [`Outcome`]:
///
/// - 0: [`Outcome::Success`] with stdout as result (lossy UTF-8, one trailing
///   newline trimmed, truncated to [`MAX_RESULT_BYTES`]; `None` if empty).
/// - 65 (`EX_DATAERR` from `sysexits.h`): [`Outcome::Permanent`] with
///   `exit status 65: <stderr tail>`.
/// - Any other code: [`Outcome::Retry`] with `exit status N: <stderr tail>`;
///   killed by a signal: [`Outcome::Retry`] with `killed by signal N`.
/// - The program cannot be started (missing, not executable, bad working
///   directory): [`Outcome::Retry`] naming the program, so an operator can
///   fix the setup without losing the job.
///
/// Dropping the future (warren's per-queue timeout, shutdown) kills the child
/// with `SIGKILL` (`kill_on_drop`). Only the child itself is killed: a
/// program that starts background processes should `exec` its last command
/// or clean up after itself.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    program: PathBuf,
    args: Vec<String>,
    working_dir: Option<PathBuf>,
}

impl ExecHandler {
    /// A handler that runs `program` with `args`.
    ///
    /// `program` is the executable, already resolved to a path by the caller
    /// (a relative path is taken relative to the child's working directory,
    /// no `PATH` search happens for paths containing `/`). `args` are passed
    /// as they are, without shell parsing. `working_dir` is the child's
    /// current directory; `None` inherits warren's.
    pub fn new(program: PathBuf, args: Vec<String>, working_dir: Option<PathBuf>) -> Self {
        ExecHandler {
            program,
            args,
            working_dir,
        }
    }

    async fn run(&self, job: &Job) -> Outcome {
        if let Some(field) = nul_field(job) {
            return Outcome::permanent(format!(
                "the job's {field} contains a NUL byte and cannot be passed in the environment"
            ));
        }

        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("WARREN_JOB_ID", &job.id)
            .env("WARREN_ATTEMPT", job.attempt.to_string())
            .env("WARREN_MAX_ATTEMPTS", job.max_attempts.to_string())
            .env("WARREN_QUEUE", &job.queue);
        set_or_remove(&mut command, "WARREN_CORRELATION_ID", &job.correlation_id);
        set_or_remove(&mut command, "WARREN_IDEMPOTENCY_KEY", &job.idempotency_key);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }

        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => return Outcome::retry(self.spawn_error(&err)),
        };

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let write_stdin = async {
            if let Some(mut stdin) = stdin {
                match stdin.write_all(&job.payload).await {
                    Ok(()) => {}
                    // The program does not read (all of) its input: its right.
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
                    Err(err) => tracing::debug!(
                        job_id = %job.id,
                        program = %self.program.display(),
                        error = %err,
                        "writing the payload to the program's stdin failed"
                    ),
                }
                // Dropping closes the pipe: the program sees end of input.
                drop(stdin);
            }
        };
        let read_stdout = async {
            match stdout {
                Some(stdout) => read_head(stdout, STDOUT_KEEP_BYTES).await,
                None => Ok(Kept::default()),
            }
        };
        let read_stderr = async {
            match stderr {
                Some(stderr) => read_tail(stderr, STDERR_TAIL_BYTES).await,
                None => Ok(Kept::default()),
            }
        };
        let ((), stdout, stderr) = tokio::join!(write_stdin, read_stdout, read_stderr);

        let status = match child.wait().await {
            Ok(status) => status,
            Err(err) => {
                return Outcome::retry(format!(
                    "waiting for {} failed: {err}",
                    self.program.display()
                ));
            }
        };
        let stdout = match stdout {
            Ok(stdout) => stdout,
            Err(err) => {
                return Outcome::retry(format!(
                    "reading the stdout of {} failed: {err}",
                    self.program.display()
                ));
            }
        };
        // A broken stderr only loses detail from an error text.
        let stderr = stderr.unwrap_or_default();

        outcome_of(status, stdout, stderr)
    }

    fn spawn_error(&self, err: &io::Error) -> String {
        match &self.working_dir {
            Some(dir) => format!(
                "cannot start program {} (working directory {}): {err}",
                self.program.display(),
                dir.display()
            ),
            None => format!("cannot start program {}: {err}", self.program.display()),
        }
    }
}

impl Handler for ExecHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> HandlerFuture<'a> {
        Box::pin(self.run(job))
    }
}

/// Maps the exit status and captured output to an [`Outcome`].
fn outcome_of(status: ExitStatus, stdout: Kept, stderr: Kept) -> Outcome {
    match status.code() {
        Some(0) => {
            let mut bytes = stdout.bytes.as_slice();
            if !stdout.dropped
                && let Some(rest) = bytes.strip_suffix(b"\n")
            {
                bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            if bytes.is_empty() && !stdout.dropped {
                Outcome::Success { result: None }
            } else {
                Outcome::Success {
                    result: Some(head_text(bytes, stdout.dropped, MAX_RESULT_BYTES)),
                }
            }
        }
        Some(code) => {
            let error = with_stderr(format!("exit status {code}"), &stderr);
            if code == EX_DATAERR {
                Outcome::permanent(error)
            } else {
                Outcome::retry(error)
            }
        }
        None => Outcome::retry(with_stderr(terminated(status), &stderr)),
    }
}

/// Describes an exit without a code.
#[cfg(unix)]
fn terminated(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status.signal() {
        Some(signal) => format!("killed by signal {signal}"),
        None => format!("terminated abnormally ({status})"),
    }
}

/// Describes an exit without a code.
#[cfg(not(unix))]
fn terminated(status: ExitStatus) -> String {
    format!("terminated abnormally ({status})")
}

/// `prefix: <stderr tail>`, or just `prefix` when stderr was empty.
fn with_stderr(prefix: String, stderr: &Kept) -> String {
    let tail = tail_text(&stderr.bytes, stderr.dropped);
    if tail.is_empty() {
        prefix
    } else {
        format!("{prefix}: {tail}")
    }
}

/// Which of the job's texts that go into the environment holds a NUL byte
/// (which no environment can carry), if any.
fn nul_field(job: &Job) -> Option<&'static str> {
    let has_nul = |s: &str| s.contains('\0');
    if has_nul(&job.id) {
        Some("id")
    } else if has_nul(&job.queue) {
        Some("queue name")
    } else if job.correlation_id.as_deref().is_some_and(has_nul) {
        Some("correlation id")
    } else if job.idempotency_key.as_deref().is_some_and(has_nul) {
        Some("idempotency key")
    } else {
        None
    }
}

fn set_or_remove(command: &mut Command, name: &str, value: &Option<String>) {
    match value {
        Some(value) => {
            command.env(name, value);
        }
        None => {
            command.env_remove(name);
        }
    }
}

/// Part of an output stream kept in memory.
#[derive(Debug, Default)]
struct Kept {
    /// The kept bytes: the start (stdout) or the end (stderr) of the stream.
    bytes: Vec<u8>,
    /// Whether bytes beyond the kept ones were read and dropped.
    dropped: bool,
}

/// Reads `reader` to its end, keeping its first `cap` bytes.
async fn read_head<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> io::Result<Kept> {
    let mut kept = Kept::default();
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = cap - kept.bytes.len();
        if n > room {
            kept.bytes.extend_from_slice(&buf[..room]);
            kept.dropped = true;
        } else {
            kept.bytes.extend_from_slice(&buf[..n]);
        }
    }
}

/// Reads `reader` to its end, keeping its last `cap` bytes.
async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> io::Result<Kept> {
    let mut kept = Kept::default();
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            if kept.bytes.len() > cap {
                let excess = kept.bytes.len() - cap;
                kept.bytes.drain(..excess);
                kept.dropped = true;
            }
            return Ok(kept);
        }
        kept.bytes.extend_from_slice(&buf[..n]);
        // Compact now and then, not on every read.
        if kept.bytes.len() > cap + READ_CHUNK {
            let excess = kept.bytes.len() - cap;
            kept.bytes.drain(..excess);
            kept.dropped = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_head_keeps_the_start() {
        let data = [b'a'; 100];
        let kept = read_head(&data[..], 10).await.expect("reading a slice");
        assert_eq!(kept.bytes, vec![b'a'; 10]);
        assert!(kept.dropped);
        let kept = read_head(&data[..], 100).await.expect("reading a slice");
        assert_eq!(kept.bytes.len(), 100);
        assert!(!kept.dropped);
    }

    #[tokio::test]
    async fn read_tail_keeps_the_end() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let kept = read_tail(&data[..], 1000).await.expect("reading a slice");
        assert_eq!(kept.bytes, data[data.len() - 1000..]);
        assert!(kept.dropped);
        let kept = read_tail(&data[..10], 1000).await.expect("reading a slice");
        assert_eq!(kept.bytes, data[..10]);
        assert!(!kept.dropped);
    }
}
