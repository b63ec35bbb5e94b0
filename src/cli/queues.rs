//! `warren queues pause|resume QUEUE`: pause a queue fleet-wide, from the command line. It
//! writes the store directly (as `POST /v1/queues/{queue}/pause|resume` does); every worker
//! process reads it within about a second.

use anyhow::Context as _;
use clap::Subcommand;
use warren::Config;

/// What `warren queues` does besides showing the table.
#[derive(Subcommand, Debug)]
pub(crate) enum QueuesAction {
    /// Stop every worker of QUEUE, on every host, from taking deliveries (within 2 s); jobs
    /// already running finish, new ones wait in the broker. Kept until `resume`.
    Pause {
        /// A configured queue.
        queue: String,
    },
    /// Let the workers of a paused QUEUE take deliveries again (within 2 s).
    Resume {
        /// A configured queue.
        queue: String,
    },
}

/// Runs a `warren queues` action.
pub(crate) async fn run(config: &Config, action: QueuesAction) -> anyhow::Result<()> {
    let (QueuesAction::Pause { queue } | QueuesAction::Resume { queue }) = &action;
    if config.queue(queue).is_none() {
        anyhow::bail!(
            "`{queue}` is not a configured queue (queues: {})",
            config.queues.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let store = warren::store::open(&config.store_options())
        .await
        .context("cannot open the status store")?;
    match action {
        QueuesAction::Pause { queue } => {
            let changed = store
                .queue_pause(&queue, warren::store::now_ms())
                .await
                .context("cannot record the pause")?;
            if changed {
                println!(
                    "paused {queue}: its workers take no new deliveries within 2 s; jobs still \
                     arrive and wait in the broker (`warren queues resume {queue}` to go on)"
                );
            } else {
                println!("{queue} was already paused");
            }
        }
        QueuesAction::Resume { queue } => {
            let changed = store
                .queue_resume(&queue)
                .await
                .context("cannot record the resume")?;
            if changed {
                println!("resumed {queue}: its workers consume again within 2 s");
            } else {
                println!("{queue} was not paused");
            }
        }
    }
    Ok(())
}
