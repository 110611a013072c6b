//! The [`Daemon`] handle, the control API's way in, against a daemon running in this process.
//!
//! Its own test binary with a single test: the daemon makes the process a child subreaper and
//! reaps every child, which must not meet other tests' children.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal_supervisor::daemon::{ApiError, Daemon, Options, Server, StateChange};
use shoal_supervisor::machine::RequestError;
use tokio::sync::broadcast;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn wait_change(changes: &mut broadcast::Receiver<StateChange>, name: &str, to: &str) {
    timeout(TIMEOUT, async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.name == name && change.to == to {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never became {to}"));
}

async fn wait_log(daemon: &Daemon, name: &str, text: &str) -> u64 {
    let mut seq = 0;
    timeout(TIMEOUT, async {
        loop {
            let page = daemon.follow_logs(name, seq, 100).await.unwrap();
            if page.lines.iter().any(|l| l.text == text) {
                return page.next_seq;
            }
            seq = page.next_seq;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never logged {text:?}"))
}

#[test]
fn the_handle_lists_steers_and_reads_logs() {
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    std::fs::write(
        services.join("svc.toml"),
        "description = \"a sleeper\"\ncommand = [\"/bin/sh\", \"-c\", \"echo hello; exec sleep \
         60\"]\n",
    )
    .unwrap();
    std::fs::write(services.join("bad.toml"), "command = 42\n").unwrap();
    let options = Options {
        services_dir: services,
        cgroup_root: dir.path().join("no-cgroup2"),
        notify_socket: dir.path().join("notify"),
        log_dir: dir.path().join("log"),
        shutdown_timeout: Duration::from_secs(5),
        ..Options::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = Server::start(options).unwrap();
        let daemon = server.handle();
        let mut changes = daemon.subscribe();
        let running = tokio::spawn(server.run());

        wait_change(&mut changes, "svc", "ready").await;
        let list = daemon.list().await.unwrap();
        let summary: Vec<(&str, &str)> = list.iter().map(|s| (s.name.as_str(), s.state)).collect();
        assert_eq!(summary, [("bad", "invalid"), ("svc", "ready")]);
        let svc = daemon.status("svc").await.unwrap();
        assert_eq!(svc.description, "a sleeper");
        assert!(svc.pid.is_some());
        assert_eq!(svc.reason.as_deref(), Some("started"));
        assert_eq!(
            daemon.status("nope").await,
            Err(ApiError::Unknown("nope".into()))
        );
        let after_hello = wait_log(&daemon, "svc", "hello").await;

        daemon.stop("svc").await.unwrap();
        wait_change(&mut changes, "svc", "inactive").await;
        assert_eq!(daemon.status("svc").await.unwrap().pid, None);
        daemon.start("svc").await.unwrap();
        wait_change(&mut changes, "svc", "ready").await;
        let first = daemon.status("svc").await.unwrap().pid;
        daemon.restart("svc").await.unwrap();
        wait_change(&mut changes, "svc", "ready").await;
        let second = daemon.status("svc").await.unwrap();
        assert_ne!(second.pid, first);
        assert_eq!(second.restarts, 0, "an operator restart is no crash");
        // The log goes on across runs, with the supervisor's notes between them.
        wait_log(&daemon, "svc", "hello").await;
        let page = daemon.logs("svc", after_hello, 100).unwrap();
        assert!(
            page.lines
                .iter()
                .any(|l| l.text.starts_with("stopping -> inactive: ")),
            "{page:#?}"
        );
        assert_eq!(
            daemon.stop("nope").await,
            Err(ApiError::Request(RequestError::Unknown("nope".into())))
        );
        assert!(matches!(
            daemon.logs("nope", 0, 1),
            Err(ApiError::Unknown(_))
        ));

        // PID 1's SIGTERM, to this process: the daemon's handler takes it.
        // SAFETY: kill and getpid have no memory preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        timeout(TIMEOUT, running).await.unwrap().unwrap().unwrap();
        assert_eq!(daemon.list().await, Err(ApiError::Stopped));
    });
}
