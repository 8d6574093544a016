//! An emulator that restarts in a chosen phase of a deploy: a proxy in front of it restarts it
//! before passing on the first request of that phase, which then reaches an emulator that has
//! forgotten everything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use deployer::stack::StackStatus;
use deployer::target::Target;
use usersync_local::emulator::proxy::{
    BoxFuture, Intercepted, Interceptor, ProxyBody, ReverseProxy, Upstream,
};
use usersync_local::emulator::Emulator;

use crate::emulator::REGION;

/// Where in a deploy the emulator is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployPhase {
    /// As the function archive is uploaded (the assets bucket was just made sure of).
    Upload,
    /// After the change set was created, while it is read back.
    ChangeSet,
    /// After the change set was executed, while the deploy waits for the stack.
    Execution,
}

/// Restarts the emulator before passing on the first request of a deploy that arrives in the
/// armed phase.
pub struct RestartDuringDeploy {
    emulator: tokio::sync::Mutex<Emulator>,
    /// The emulator itself, not through this proxy: for looking at the stack.
    probe: Target,
    armed: Mutex<Option<(DeployPhase, String)>>,
    restarts: AtomicUsize,
}

impl RestartDuringDeploy {
    /// Puts a proxy in front of `emulator`; deploy through the proxy's URL, and arm the
    /// restarter for a phase and a stack.
    pub async fn start(emulator: Emulator) -> Result<(Arc<Self>, ReverseProxy)> {
        let addr = emulator.addr();
        let restarter = Arc::new(RestartDuringDeploy {
            probe: Target::for_endpoint(&emulator.direct_url(), REGION),
            emulator: tokio::sync::Mutex::new(emulator),
            armed: Mutex::new(None),
            restarts: AtomicUsize::new(0),
        });
        let proxy = ReverseProxy::start(addr, Arc::clone(&restarter) as Arc<dyn Interceptor>)
            .await
            .context("failed to start the restarting proxy")?;
        Ok((restarter, proxy))
    }

    /// Restarts the emulator at the next request of `stack`'s deploy in `phase`.
    pub fn arm(&self, phase: DeployPhase, stack: &str) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((phase, stack.to_owned()));
    }

    pub fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// How often the emulator was restarted.
    pub fn restarts(&self) -> usize {
        self.restarts.load(Ordering::SeqCst)
    }

    async fn in_phase(
        &self,
        phase: DeployPhase,
        stack: &str,
        request: &http::Request<ProxyBody>,
    ) -> bool {
        let status = || async {
            self.probe
                .cloudformation()
                .describe_stacks()
                .stack_name(stack)
                .send()
                .await
                .ok()
                .and_then(|out| out.stacks().first().and_then(|s| s.stack_status().cloned()))
        };
        match phase {
            // The deployer looks for the archive before uploading it.
            DeployPhase::Upload => {
                request.method() == http::Method::HEAD
                    && request.uri().path().starts_with("/usersync-assets-")
                    && request.uri().path().ends_with(".zip")
            }
            // CloudFormation's requests are POSTs to `/`; the stack is looked at before each.
            _ if request.method() != http::Method::POST => false,
            DeployPhase::ChangeSet => status().await == Some(StackStatus::ReviewInProgress),
            DeployPhase::Execution => matches!(
                status().await,
                Some(
                    StackStatus::CreateInProgress
                        | StackStatus::CreateComplete
                        | StackStatus::CreateFailed
                )
            ),
        }
    }
}

impl Interceptor for RestartDuringDeploy {
    fn intercept<'a>(
        &'a self,
        request: http::Request<ProxyBody>,
        _upstream: &'a Upstream,
    ) -> BoxFuture<'a, Intercepted> {
        Box::pin(async move {
            let armed = self
                .armed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some((phase, stack)) = armed {
                if self.in_phase(phase, &stack, &request).await {
                    self.disarm();
                    let mut emulator = self.emulator.lock().await;
                    emulator
                        .restart()
                        .await
                        .unwrap_or_else(|err| panic!("failed to restart the emulator: {err}"));
                    self.restarts.fetch_add(1, Ordering::SeqCst);
                }
            }
            Intercepted::Forward(request)
        })
    }
}
