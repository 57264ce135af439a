//! The agent as a systemd service, as `wasmbox install containerd --agent` writes it where the
//! host runs systemd: `wasmbox agent` beside containerd, restarted if it ends, at the lowest CPU
//! and I/O priority (which the agent also takes itself).

use std::path::Path;

/// Where the unit goes, on the host.
pub const UNIT_PATH: &str = "/etc/systemd/system/wasmbox-agent.service";
/// The unit's name, for `systemctl`.
pub const UNIT: &str = "wasmbox-agent";
/// Present on a host that booted with systemd (`sd_booted(3)`).
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// k3s's containerd socket.
pub const K3S_ADDRESS: &str = "/run/k3s/containerd/containerd.sock";

/// The unit running `wasmbox` from `bin_dir` against containerd at `address`.
pub fn unit(bin_dir: &Path, address: &str, after: &str) -> String {
    format!(
        "# Written by `wasmbox install containerd --agent`.
[Unit]
Description=wasmbox agent: compiles the wasm of the images containerd pulls, before their first start
After={after}.service
Wants={after}.service

[Service]
ExecStart={bin} agent --address {address}
Restart=always
RestartSec=5
Nice=19
IOSchedulingClass=idle

[Install]
WantedBy=multi-user.target
",
        bin = bin_dir.join("wasmbox").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_installed_binary_against_the_socket_given() {
        let u = unit(Path::new("/usr/local/bin"), K3S_ADDRESS, "k3s");
        assert!(u.contains(
            "ExecStart=/usr/local/bin/wasmbox agent --address /run/k3s/containerd/containerd.sock\n"
        ));
        assert!(u.contains("After=k3s.service\n"));
        assert!(u.contains("IOSchedulingClass=idle\n"));
    }
}
