//! Where a task runs when not directly on the host: Mesos' `ContainerInfo`,
//! trimmed to what Wasmos runs (Docker images through the agent's engine).
//!
//! On the wire it reads as Mesos writes it:
//! `{"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE",
//! "port_mappings": [{"container_port": 80, "protocol": "tcp"}]}}`.

use serde::{Deserialize, Serialize};

/// The longest image reference accepted.
pub const MAX_IMAGE_LEN: usize = 1024;

/// A task's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum ContainerInfo {
    Docker { docker: DockerInfo },
}

impl ContainerInfo {
    pub fn docker(&self) -> Option<&DockerInfo> {
        match self {
            ContainerInfo::Docker { docker } => Some(docker),
        }
    }
}

/// A Docker image and how the container is wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerInfo {
    pub image: String,
    #[serde(default)]
    pub network: DockerNetwork,
    /// The n-th mapping publishes its container port on the task's n-th
    /// host port (bridge network only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub force_pull_image: bool,
    /// Docker named volumes mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<DockerVolume>,
}

/// A Docker named volume, made by its driver if it does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerVolume {
    pub name: String,
    /// The volume driver (`local` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    /// Absolute: inside the container. Relative: below the sandbox.
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A Docker volume or driver name: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn check_docker_name(name: &str, what: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "docker volume {what} {name:?} must be 1-{max} letters, digits, `_`, `.` or `-`, starting with a letter or digit"
        ))
    }
}

impl DockerVolume {
    pub fn validate(&self) -> Result<(), String> {
        check_docker_name(&self.name, "name", 255)?;
        if !self.driver.is_empty() {
            check_docker_name(&self.driver, "driver", 64)?;
        }
        if self.options.len() > 32
            || self
                .options
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 255 || v.len() > 4096)
        {
            return Err(format!(
                "docker volume {}: at most 32 options, keys of 1-255 bytes and values up to 4 KiB",
                self.name
            ));
        }
        if self.container_path.starts_with('/') {
            crate::task::check_absolute(&self.container_path, "container_path")
        } else {
            crate::reservation::check_container_path(&self.container_path)
        }
        .map_err(|e| format!("docker volume {}: {e}", self.name))
    }
}

/// The network a Docker task joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DockerNetwork {
    #[default]
    Host,
    Bridge,
    None,
}

impl DockerNetwork {
    /// Docker's name for it (`host`, `bridge`, `none`).
    pub fn as_docker(self) -> &'static str {
        match self {
            DockerNetwork::Host => "host",
            DockerNetwork::Bridge => "bridge",
            DockerNetwork::None => "none",
        }
    }
}

/// A container port published on a host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

impl DockerInfo {
    /// Checks the image reference and the port mappings against the
    /// number of host ports the task holds.
    pub fn validate(&self, host_ports: usize) -> Result<(), String> {
        let image = &self.image;
        if image.trim().is_empty() {
            return Err("docker image must not be empty".into());
        }
        if image.len() > MAX_IMAGE_LEN {
            return Err(format!("docker image is longer than {MAX_IMAGE_LEN} bytes"));
        }
        if image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\0')
            || image.starts_with(['-', '/', ':', '@'])
        {
            return Err(format!("docker image {image:?} is not an image reference"));
        }
        if !self.port_mappings.is_empty() && self.network != DockerNetwork::Bridge {
            return Err("docker port mappings need the BRIDGE network".into());
        }
        if self.port_mappings.len() > host_ports {
            return Err(format!(
                "{} docker port mappings, but the task holds only {host_ports} ports",
                self.port_mappings.len()
            ));
        }
        for v in &self.volumes {
            v.validate()?;
        }
        for m in &self.port_mappings {
            if m.container_port == 0 {
                return Err("docker port mapping container_port must be 1-65535".into());
            }
            if m.protocol != "tcp" && m.protocol != "udp" {
                return Err(format!(
                    "docker port mapping protocol must be tcp or udp, not {:?}",
                    m.protocol
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(image: &str) -> DockerInfo {
        DockerInfo {
            image: image.into(),
            network: DockerNetwork::Host,
            port_mappings: vec![],
            force_pull_image: false,
            volumes: vec![],
        }
    }

    #[test]
    fn reads_and_writes_mesos_container_info() {
        let json = r#"{"type":"DOCKER","docker":{"image":"busybox:1","network":"BRIDGE",
            "port_mappings":[{"container_port":80}]}}"#;
        let c: ContainerInfo = serde_json::from_str(json).unwrap();
        let d = c.docker().unwrap();
        assert_eq!(d.network, DockerNetwork::Bridge);
        assert_eq!(d.port_mappings[0].protocol, "tcp");
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["type"], "DOCKER");
        assert_eq!(back["docker"]["image"], "busybox:1");
    }

    #[test]
    fn bad_images_and_mappings_are_refused_with_the_field() {
        for bad in ["", " ", "a b", "-rm", "x\u{0}y"] {
            assert!(docker(bad).validate(0).is_err(), "{bad:?}");
        }
        assert!(
            docker("registry:5000/team/app:1.2@sha256:ab")
                .validate(0)
                .is_ok()
        );
        let mut d = docker("app");
        d.port_mappings.push(PortMapping {
            container_port: 80,
            protocol: "tcp".into(),
        });
        let e = d.validate(1).unwrap_err();
        assert!(e.contains("BRIDGE"), "{e}");
        d.network = DockerNetwork::Bridge;
        assert!(d.validate(1).is_ok());
        assert!(d.validate(0).unwrap_err().contains("only 0 ports"));
        d.port_mappings[0].protocol = "sctp".into();
        assert!(d.validate(1).unwrap_err().contains("protocol"));
    }
}
