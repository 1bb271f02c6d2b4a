//! Accepts connections on the agent socket and runs one session per
//! connection, until the build is released, the agent is signalled, no
//! session has been open for the idle timeout, or the build has been held
//! for its longest pause (sessions or not: a paused build holds its
//! outputs' locks, which other builds may wait for).

use super::{capture, exec, shell, SessionContext};
use crate::protocol::{AgentCodec, AgentFrame, ClientFrame, Request, VERSION};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Sessions past this many are refused with a clear message.
pub const MAX_SESSIONS: usize = 16;
/// How long sessions get to say goodbye once the wait ends.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// A client that has not said what it wants by then is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Released,
    TimedOut,
    HeldLongest,
    Signalled,
}

impl Ending {
    pub fn describe(self) -> &'static str {
        match self {
            Ending::Released => "was released",
            Ending::TimedOut => "waited its idle timeout out",
            Ending::HeldLongest => "was held for its longest pause",
            Ending::Signalled => "was stopped by a signal",
        }
    }
}

/// Counts open sessions; dropping a guard closes one.
struct SessionGuard(watch::Sender<usize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// How long the build waits: `idle` without a session, `longest` in all.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub idle: Duration,
    pub longest: Duration,
}

/// Serves sessions until the build should go on to fail.
pub async fn serve(listener: UnixListener, context: SessionContext, patience: Patience) -> Ending {
    let timeout = patience.idle;
    let held_until = Instant::now() + patience.longest;
    let context = Arc::new(context);
    shell::prewarm(&context, shell::DEFAULT_TERM.into());
    let release = CancellationToken::new();
    let (open_tx, mut open_rx) = watch::channel(0usize);
    let mut deadline = Some(Instant::now() + timeout);
    let ending = 'serve: {
        let (Ok(mut term), Ok(mut hangup), Ok(mut interrupt)) =
            (signal(SignalKind::terminate()), signal(SignalKind::hangup()), signal(SignalKind::interrupt()))
        else {
            break 'serve Ending::Signalled;
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors, say: wait rather than spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let guard = admit(&open_tx);
                    tokio::spawn(handle(stream, guard, context.clone(), release.clone()));
                }
                Ok(()) = open_rx.changed() => {
                    let open = *open_rx.borrow_and_update();
                    deadline = (open == 0).then(|| Instant::now() + timeout);
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break Ending::TimedOut,
                () = sleep_until(held_until) => break Ending::HeldLongest,
                () = release.cancelled() => break Ending::Released,
                _ = term.recv() => break Ending::Signalled,
                _ = hangup.recv() => break Ending::Signalled,
                _ = interrupt.recv() => break Ending::Signalled,
            }
        }
    };
    let _ = context.ending.set(ending);
    release.cancel();
    let goodbyes = open_rx.wait_for(|open| *open == 0);
    let _ = tokio::time::timeout(GOODBYE_GRACE, goodbyes).await;
    context.spare.close();
    ending
}

/// Counts a new connection, or returns `None` when there are too many.
fn admit(open: &watch::Sender<usize>) -> Option<SessionGuard> {
    let mut admitted = false;
    open.send_if_modified(|count| {
        admitted = *count < MAX_SESSIONS;
        if admitted {
            *count += 1;
        }
        admitted
    });
    admitted.then(|| SessionGuard(open.clone()))
}

/// Runs one connection: reads its hello and starts what it asks for.
async fn handle(stream: UnixStream, guard: Option<SessionGuard>, context: Arc<SessionContext>, release: CancellationToken) {
    let mut framed = Framed::new(stream, AgentCodec::default());
    if guard.is_none() {
        let refusal = format!("too many sessions ({MAX_SESSIONS} are open); try again when one ends");
        let _ = framed.send(AgentFrame::Error(refusal)).await;
        return;
    }
    let request = match tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(ClientFrame::Hello(hello)))) if hello.version == VERSION => hello.request,
        Ok(Some(Ok(ClientFrame::Hello(hello)))) => {
            let message = format!("the client speaks protocol {}, this agent {VERSION}", hello.version);
            let _ = framed.send(AgentFrame::Error(message)).await;
            return;
        }
        Ok(Some(Err(err))) => {
            let _ = framed.send(AgentFrame::Error(format!("bad hello: {err}"))).await;
            return;
        }
        _ => return,
    };
    let with_path = match &request {
        Request::Attach { path, .. } | Request::Exec { path, .. } => super::with_path(path),
        _ => Ok(None),
    };
    let with_path = match with_path {
        Ok(with_path) => with_path,
        Err(refused) => {
            let _ = framed.send(AgentFrame::Error(refused)).await;
            return;
        }
    };
    let outcome = match request {
        Request::Attach { rows, cols, term, .. } => shell::run(framed, rows, cols, term, with_path, &context, &release).await,
        Request::Exec { argv, .. } => exec::run(framed, argv, with_path, &context, &release).await,
        Request::Capture => capture::run(framed, &context).await,
        Request::Release => {
            let answered = framed.send(AgentFrame::Exit(0)).await.map_err(Into::into);
            release.cancel();
            answered
        }
    };
    if let Err(err) = outcome {
        eprintln!("nix-attach: a session ended with an error: {:#}", anyhow::Error::from(err));
    }
    drop(guard);
}
