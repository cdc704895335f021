//! Packet drops inside one container's network namespace: the host's
//! `iptables`, run through `nsenter -t PID -n`, so the image holds nothing
//! but the server and the host's own firewall is never touched. A container
//! started again gets a fresh namespace with no rules.

use super::command::run;
use crate::Error;
use std::net::Ipv4Addr;

/// Drops every packet the namespace of `pid` receives from `sources`.
pub(super) async fn drop_from(pid: u32, sources: &[Ipv4Addr]) -> Result<(), Error> {
    for source in sources {
        let source = source.to_string();
        iptables(pid, &["-A", "INPUT", "-s", &source, "-j", "DROP"]).await?;
    }
    Ok(())
}

/// Removes every drop rule in the namespace of `pid`.
pub(super) async fn flush(pid: u32) -> Result<(), Error> {
    iptables(pid, &["-F", "INPUT"]).await
}

async fn iptables(pid: u32, rule: &[&str]) -> Result<(), Error> {
    let mut args = vec![
        "-t".to_owned(),
        pid.to_string(),
        "-n".to_owned(),
        "iptables".to_owned(),
        "-w".to_owned(),
    ];
    args.extend(rule.iter().map(|arg| (*arg).to_owned()));
    run("nsenter", &args).await.map(drop)
}
