//! The actors of the proxy, one per file, each with its messages beside it.
//!
//! Actors never block their thread: network calls are spawned futures, and nothing here waits on
//! another actor's answer inside a handler. The two exceptions block a thread of their own: the
//! WAL writer (its group commits) and the lease keeper (its renewals must not wait behind
//! anything).

pub mod health;
pub mod lease;
pub mod mapping;
pub mod replay;
pub mod retention;
pub mod router;
pub mod seeder;
pub mod verifier;
pub mod wal_writer;

use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::{Actor, ActorContext, Context};
use log::error;

/// Runs a handler body; a panic is logged and stops the actor, so its `Supervisor` restarts it
/// with fresh transient state instead of losing the actor (and its mailbox) for good.
pub(crate) fn guarded<A, R>(
    actor: &str,
    ctx: &mut Context<A>,
    body: impl FnOnce() -> R,
) -> Option<R>
where
    A: Actor<Context = Context<A>>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => Some(result),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            error!("{actor} actor panicked: {reason}; restarting it");
            ctx.stop();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use actix::{Handler, Message, Supervised, Supervisor};

    use super::*;

    /// A counter whose handler panics on demand.
    struct Fragile {
        count: u32,
        restarts: u32,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
    }

    impl Supervised for Fragile {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.count = 0;
            self.restarts += 1;
        }
    }

    #[derive(Message)]
    #[rtype(result = "Option<(u32, u32)>")]
    struct Bump {
        panic: bool,
    }

    impl Handler<Bump> for Fragile {
        type Result = Option<(u32, u32)>;

        fn handle(&mut self, msg: Bump, ctx: &mut Context<Self>) -> Self::Result {
            guarded("fragile", ctx, || {
                assert!(!msg.panic, "asked to panic");
                self.count += 1;
                (self.count, self.restarts)
            })
        }
    }

    #[actix::test]
    async fn a_panicking_handler_restarts_the_actor() {
        let addr = Supervisor::start(|_| Fragile { count: 0, restarts: 0 });
        assert_eq!(addr.send(Bump { panic: false }).await.unwrap(), Some((1, 0)));
        assert_eq!(addr.send(Bump { panic: true }).await.unwrap(), None);
        // The same address keeps working, on a restarted actor with reset state.
        assert_eq!(addr.send(Bump { panic: false }).await.unwrap(), Some((1, 1)));
    }
}
