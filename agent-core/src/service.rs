//! Running as a Windows service: `<agent> service`, the command line the
//! MSI registers. The service control manager's dispatcher calls back on a
//! thread of its own; the agent's body runs there with a cancellation
//! token that a Stop or Shutdown request cancels, so the agent spools
//! what it has and stops within a second, as on SIGTERM. The service's
//! failure actions (restart after 5 s, three times a day) are set by the
//! service itself at start, before it reads its config, and apply to a
//! stop with a non-zero exit code as to a crash (msitools' `wixl` cannot
//! write them).
//!
//! Invariant: the only `unsafe` is the entry point the
//! `define_windows_service!` macro writes (it converts the raw argument
//! vector the system passes); nothing here runs outside a service.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceState, ServiceStatus,
    ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// The agent's body: runs until the token is cancelled, answers the exit
/// code (0: stopped cleanly).
pub type Body = Box<dyn FnOnce(CancellationToken) -> u32 + Send>;

/// The service's name and body, handed from [`run`] to the dispatcher's
/// thread (the system's callback takes no context).
static PENDING: Mutex<Option<(String, Body)>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Hands the process to the service control manager, which runs `body` as
/// service `name`; returns when the service has stopped. Fails at once
/// when the process was not started by the service control manager.
pub fn run(name: &str, body: Body) -> Result<(), windows_service::Error> {
    if let Ok(mut pending) = PENDING.lock() {
        *pending = Some((name.to_string(), body));
    }
    service_dispatcher::start(name, ffi_service_main)
}

fn status(state: ServiceState, exit: u32, wait: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint: 0,
        wait_hint: wait,
        process_id: None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let Some((name, body)) = PENDING.lock().ok().and_then(|mut p| p.take()) else {
        return;
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(&name, handler) else {
        return;
    };
    let _ = handle.set_service_status(status(ServiceState::Running, 0, Duration::ZERO));
    let code = body(shutdown);
    let _ = handle.set_service_status(status(ServiceState::Stopped, code, Duration::ZERO));
}

/// Asks the service control manager to restart service `name` 5 s after
/// it crashes (three times; the count resets after a day). Best effort:
/// logged when refused.
pub fn restart_on_failure(name: &str) {
    let set = || -> Result<(), windows_service::Error> {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
        let service = manager.open_service(name, ServiceAccess::CHANGE_CONFIG)?;
        let restart = ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: Duration::from_secs(5),
        };
        service.update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart.clone(), restart.clone(), restart]),
        })?;
        // A stop with a non-zero exit code (a bad config, a refused ACL)
        // counts as a failure too, not only a crash.
        service.set_failure_actions_on_non_crash_failures(true)
    };
    if let Err(e) = set() {
        tracing::warn!(service = name, error = %e, "Cannot set the service to restart after a crash.");
    }
}
